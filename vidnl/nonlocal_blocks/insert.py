"""Insert nonlocal blocks after chosen residual blocks of any backbone.

A backbone takes part by exposing ``stages``: a sequence of stage modules, each with
``num_blocks`` (residual blocks in the stage), ``out_channels`` and ``nonlocal_blocks`` (an
``nn.ModuleDict`` keyed by the block index as a string). A stage runs block ``i`` and then,
if present, ``nonlocal_blocks[str(i)]``. Keeping the nonlocal blocks beside the residual blocks
(not in between them) leaves the backbone's parameter names unchanged, so pretrained 2D/3D
weights load with or without nonlocal blocks.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch.nn as nn


@runtime_checkable
class NonlocalStage(Protocol):
    """What ``insert_nonlocal`` needs of a backbone stage (``vidnl.models.layers.ResStage``
    implements it): its residual block count, its output channels, and the ``nn.ModuleDict`` of
    nonlocal blocks it runs after block ``i`` under key ``str(i)``."""

    num_blocks: int
    out_channels: int
    nonlocal_blocks: nn.ModuleDict


@runtime_checkable
class NonlocalBackbone(Protocol):
    """What a backbone exposes to take nonlocal blocks by config: ``stages`` (each a
    ``NonlocalStage``) and their ``stage_names`` (what NONLOCAL.LOCATION's entries index)."""

    stage_names: Sequence[str]

    @property
    def stages(self) -> Sequence[NonlocalStage]: ...


def insert_nonlocal(
    stages: Sequence[NonlocalStage],
    location: Sequence[Sequence[int]],
    make_block: Callable[[int], nn.Module],
    stage_names: Sequence[str] | None = None,
) -> int:
    """Add ``make_block(channels)`` after block ``i`` of stage ``s`` for every ``i in location[s]``.

    Returns the number of blocks inserted. Out-of-range stages or indices raise ``ValueError``.
    """
    names = list(stage_names) if stage_names else [f"stage {s}" for s in range(len(stages))]
    if len(location) > len(stages) and any(location[len(stages):]):
        raise ValueError(f"nonlocal location names {len(location)} stages, the backbone has {len(stages)}")
    location = list(location)[:len(stages)]  # trailing empty entries (e.g. the 4-stage default) are fine
    count = 0
    for s, indices in enumerate(location):
        stage = stages[s]
        for i in indices:
            if not 0 <= i < stage.num_blocks:
                raise ValueError(
                    f"nonlocal location index {i} out of range for {names[s]} with "
                    f"{stage.num_blocks} blocks (allowed 0..{stage.num_blocks - 1})"
                )
            stage.nonlocal_blocks[str(i)] = make_block(stage.out_channels)
            count += 1
    return count
