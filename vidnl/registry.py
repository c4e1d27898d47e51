"""One registry class for everything looked up by name (nonlocal blocks, datasets, models).

A :class:`Registry` maps names to objects (classes or functions) in registration order, with an
optional metadata dict per entry (e.g. a model's stage function). It is a read-only
``Mapping``, so ``name in reg``, ``reg[name]``, ``sorted(reg)``, ``len(reg)`` and ``reg.items()``
work as for a dict::

    BLOCKS = Registry("nonlocal block")

    @BLOCKS.register("mean")              # as a decorator ...
    class GlobalMean(NonLocalBase): ...

    BLOCKS.register("nl2", NL, paper="Wang et al. 2018")   # ... or as a call, with metadata

A name registered twice raises ``ValueError``; an unknown name raises :class:`UnknownNameError`
(a ``KeyError``) whose message lists the known names and suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Iterator

from .errors import ConfigError

_MISSING = object()


class UnknownNameError(KeyError):
    """A name that is not registered; ``str(e)`` is the plain message (not KeyError's repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Mapping):
    """Name -> object, in registration order, with optional metadata per name.

    ``kind`` names what is registered in error messages ("unknown dataset 'x'; known: [...]").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._metadata: dict[str, dict] = {}

    def register(self, name: str, obj: Any = _MISSING, **metadata) -> Any:
        """Register ``obj`` under ``name`` and return it; without ``obj``, return a decorator that
        does so. ``metadata`` is kept per name (:meth:`metadata`)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def add(o):
            if name in self._objects:
                raise ValueError(f"{self.kind} {name!r} is already registered (to {self._objects[name]!r}); "
                                 f"names must be unique")
            self._objects[name] = o
            self._metadata[name] = dict(metadata)
            return o

        return add if obj is _MISSING else add(obj)

    def unknown(self, name: Any) -> UnknownNameError:
        """The error for an unregistered ``name``: the known names and the closest one."""
        msg = f"unknown {self.kind} {name!r}; known: {sorted(self._objects)}"
        close = difflib.get_close_matches(str(name), list(self._objects), n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        return UnknownNameError(msg)

    def check(self, name: Any, key: str) -> None:
        """A ConfigError naming the config ``key`` (e.g. "MODEL.ARCH") unless ``name`` is
        registered: "KEY: 'x' is not allowed; choose one of 'a', 'b'. Did you mean 'a'?"."""
        if name in self._objects:
            return
        msg = f"{key}: {name!r} is not allowed; choose one of {', '.join(map(repr, sorted(self._objects)))}."
        close = difflib.get_close_matches(str(name), list(self._objects), n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        raise ConfigError(msg)

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The object registered as ``name``; an unknown name raises :class:`UnknownNameError`
        unless a ``default`` is given (then returned, as ``dict.get``)."""
        if name in self._objects:
            return self._objects[name]
        if default is _MISSING:
            raise self.unknown(name)
        return default

    def metadata(self, name: str) -> dict:
        """A copy of the metadata registered with ``name``."""
        if name not in self._objects:
            raise self.unknown(name)
        return dict(self._metadata[name])

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._objects)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._objects)})"

