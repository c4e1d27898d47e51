"""UCF-101 (Soomro et al. 2012): the CSV video dataset of one of the three official splits.

``data_prep/prepare_ucf101.py`` writes ``DATA.PATH_TO_DATA_DIR/split{1,2,3}/{train,val,test}.csv``
(``val.csv`` is the test list: UCF-101 has no separate validation set) and ``classes.txt``; this
dataset reads ``split{DATA.SPLIT}``. Items are those of :class:`VideoCSVDataset`.
"""

from __future__ import annotations

import os

from ...errors import DatasetError
from .video_csv import VideoCSVDataset
from ..class_names import read_class_names


def read_classes(path: str) -> list[str]:
    """Class names of a ``classes.txt`` (lines ``index name``, or one name per line), read as every
    class list is (:func:`vidnl.data.class_names.read_class_names`: UTF-8 with or without a BOM,
    CRLF or LF), so the test and predict read one file the same way."""
    return read_class_names(path, DatasetError)


def check_labels(ds: VideoCSVDataset, cfg, classes_file: str, split: str) -> None:
    """Labels must fit MODEL.NUM_CLASSES, and classes.txt (if present) must list as many classes."""
    top = max(r.label for r in ds.records)
    if top >= cfg.MODEL.NUM_CLASSES:
        raise DatasetError(f"{split}.csv has label {top} but MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} "
                           f"(labels must be 0..{cfg.MODEL.NUM_CLASSES - 1})")
    if os.path.isfile(classes_file):
        n = len(read_classes(classes_file))
        if n != cfg.MODEL.NUM_CLASSES:
            raise DatasetError(f"{classes_file} lists {n} classes but MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES}; "
                               f"set MODEL.NUM_CLASSES {n}")


class UCF101Dataset(VideoCSVDataset):
    """UCF-101 split ``DATA.SPLIT`` from ``DATA.PATH_TO_DATA_DIR/split{N}``."""

    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "UCF101Dataset":
        root = cfg.DATA.PATH_TO_DATA_DIR
        folder = os.path.join(root, f"split{cfg.DATA.SPLIT}")
        if not os.path.isdir(folder):
            raise DatasetError(
                f"UCF-101 split folder {folder} not found (DATA.PATH_TO_DATA_DIR {root!r}, DATA.SPLIT "
                f"{cfg.DATA.SPLIT}); write it with: python data_prep/prepare_ucf101.py --root <UCF101 download> "
                f"--out {root or '<folder>'}"
            )
        sub = cfg.clone()
        sub.defrost()
        sub.DATA.PATH_TO_DATA_DIR = folder
        ds = super().from_cfg(sub, split, single_view)
        check_labels(ds, cfg, os.path.join(root, "classes.txt"), split)
        return ds
