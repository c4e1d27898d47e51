"""Datasets by name (TRAIN.DATASET / TEST.DATASET): ``DATASET_REGISTRY`` maps a name to a class
with ``from_cfg(cfg, split, single_view=False)``. Re-ID datasets (REID.DATASET) are in
``reid.REID_DATASET_REGISTRY``."""

import logging
import os

from ...errors import DatasetError
from ...registry import Registry
from .video_csv import ClipConfig, VideoCSVDataset, VideoRecord, read_csv

logger = logging.getLogger(__name__)

DATASET_REGISTRY = Registry("dataset")
DATASET_REGISTRY.register("csv", VideoCSVDataset)

# Real datasets (docs/datasets.md): videos ...
from .kinetics import KineticsDataset  # noqa: E402
from .ucf101 import UCF101Dataset  # noqa: E402

DATASET_REGISTRY.register("ucf101", UCF101Dataset)
DATASET_REGISTRY.register("kinetics", KineticsDataset)
# ... and images as one-frame clips.
from .images import CIFAR10Dataset, CIFAR100Dataset, CUB200Dataset, ImageFolderDataset  # noqa: E402

DATASET_REGISTRY.register("cifar10", CIFAR10Dataset)
DATASET_REGISTRY.register("cifar100", CIFAR100Dataset)
DATASET_REGISTRY.register("cub200", CUB200Dataset)
DATASET_REGISTRY.register("imagefolder", ImageFolderDataset)


def list_datasets() -> tuple[str, ...]:
    """The registered TRAIN.DATASET / TEST.DATASET names, in registration order."""
    return DATASET_REGISTRY.names()


def check_dataset_name(name: str, key: str) -> None:
    """ConfigError naming ``key`` (TRAIN.DATASET / TEST.DATASET) unless ``name`` is registered."""
    DATASET_REGISTRY.check(name, key)


def build_dataset(name: str, cfg, split: str, single_view: bool = False):
    """``DATASET_REGISTRY[name].from_cfg(cfg, split, single_view)``; an unknown name is a
    ConfigError naming TRAIN.DATASET / TEST.DATASET and the registered names."""
    check_dataset_name(name, "TRAIN.DATASET" if split == "train" else "TEST.DATASET")
    return DATASET_REGISTRY[name].from_cfg(cfg, split, single_view=single_view)


def preflight_split(name: str, cfg, split: str):
    """Read a CSV-listed split now (file, encoding, every label in [0, MODEL.NUM_CLASSES)), so a
    mistake in the test CSV stops the run before training instead of after it. Returns the
    dataset (None for image datasets, which are checked when they are built)."""
    if name not in DATASET_REGISTRY or issubclass(DATASET_REGISTRY[name], VideoCSVDataset):  # unknown: the error
        return build_dataset(name, cfg, split)
    return None


def check_listed_files(dataset, csv_name: str, max_bad_fraction: float) -> int:
    """Whether the videos (or frame folders) a CSV-listed split names exist, before any work:
    with more missing than ``max_bad_fraction`` (DATA_LOADER.MAX_BAD_FRACTION) of them a
    DatasetError with the count and the first names; with fewer a warning (they are then counted
    as undecodable like any unreadable video). Returns the number missing; other datasets: 0."""
    records = getattr(dataset, "records", None)
    if not isinstance(dataset, VideoCSVDataset) or not records:
        return 0
    missing = [r.path for r in records if not os.path.exists(r.path)]
    if not missing:
        return 0
    first = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    if len(missing) > max_bad_fraction * len(records):
        raise DatasetError(
            f"{len(missing)} of {len(records)} videos listed in {csv_name} do not exist (first: {first}), more than "
            f"DATA_LOADER.MAX_BAD_FRACTION={max_bad_fraction}: check DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX and "
            f"the paths in the CSV")
    logger.warning("%d of %d videos listed in %s do not exist (first: %s); they are counted "
                                        "as undecodable", len(missing), len(records), csv_name, first)
    return len(missing)


__all__ = ["ClipConfig", "VideoCSVDataset", "VideoRecord", "read_csv", "DATASET_REGISTRY", "build_dataset",
           "list_datasets", "check_dataset_name", "preflight_split", "check_listed_files"]
