"""Datasets by name (TRAIN.DATASET / TEST.DATASET)."""

from ...errors import ConfigError
from .video_csv import ClipConfig, VideoCSVDataset, VideoRecord, read_csv

DATASET_REGISTRY = {"csv": VideoCSVDataset}

# Real datasets (docs/datasets.md): videos ...
from .kinetics import KineticsDataset  # noqa: E402
from .ucf101 import UCF101Dataset  # noqa: E402

DATASET_REGISTRY["ucf101"] = UCF101Dataset
DATASET_REGISTRY["kinetics"] = KineticsDataset
# ... and images as one-frame clips.
from .images import CIFAR10Dataset, CIFAR100Dataset, CUB200Dataset, ImageFolderDataset  # noqa: E402

DATASET_REGISTRY["cifar10"] = CIFAR10Dataset
DATASET_REGISTRY["cifar100"] = CIFAR100Dataset
DATASET_REGISTRY["cub200"] = CUB200Dataset
DATASET_REGISTRY["imagefolder"] = ImageFolderDataset


def check_dataset_name(name: str, key: str) -> None:
    """ConfigError naming ``key`` (TRAIN.DATASET / TEST.DATASET) unless ``name`` is registered."""
    if name not in DATASET_REGISTRY:
        raise ConfigError(f"{key}: {name!r} is not allowed; choose one of "
                          f"{', '.join(map(repr, sorted(DATASET_REGISTRY)))}.")


def build_dataset(name: str, cfg, split: str, single_view: bool = False):
    check_dataset_name(name, "TRAIN.DATASET" if split == "train" else "TEST.DATASET")
    return DATASET_REGISTRY[name].from_cfg(cfg, split, single_view=single_view)


def preflight_split(name: str, cfg, split: str) -> None:
    """Read a CSV-listed split now (file, encoding, every label in [0, MODEL.NUM_CLASSES)), so a
    mistake in the test CSV stops the run before training instead of after it. Image datasets are
    checked when they are built."""
    if name not in DATASET_REGISTRY or issubclass(DATASET_REGISTRY[name], VideoCSVDataset):  # unknown: the error
        build_dataset(name, cfg, split)


__all__ = ["ClipConfig", "VideoCSVDataset", "VideoRecord", "read_csv", "DATASET_REGISTRY", "build_dataset",
           "check_dataset_name", "preflight_split"]
