"""Kinetics-400/600/700: the CSV video dataset written by ``data_prep/prepare_kinetics.py``.

``DATA.PATH_TO_DATA_DIR`` holds ``train.csv``, ``val.csv``, ``test.csv`` (``path label``) and
``classes.txt`` (sorted class names, ``index name``); MODEL.NUM_CLASSES must match it.
Items are those of :class:`VideoCSVDataset`.
"""

from __future__ import annotations

import os

from .ucf101 import check_labels
from .video_csv import VideoCSVDataset


class KineticsDataset(VideoCSVDataset):
    """Kinetics from ``DATA.PATH_TO_DATA_DIR/{split}.csv``, checked against ``classes.txt``."""

    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "KineticsDataset":
        ds = super().from_cfg(cfg, split, single_view)
        check_labels(ds, cfg, os.path.join(cfg.DATA.PATH_TO_DATA_DIR, "classes.txt"), split)
        return ds
