"""Config keys for image and dataset-specific data keys (issue: real datasets and data_prep).

``add_config(_C)`` adds them to the defaults (every key with a comment above it, as in
defaults.py); ``ALLOWED_VALUES`` and ``validate(cfg)`` are checked after every merge.
"""

from fvcore.common.config import CfgNode

from ..errors import ConfigError  # noqa: F401  (for validate)

ALLOWED_VALUES: dict = {}


def add_config(_C: CfgNode) -> None:
    """Add this area's keys to the defaults."""


def validate(cfg: CfgNode) -> None:
    """Cross-key rules of this area (raise ConfigError naming the key)."""
