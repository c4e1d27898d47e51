"""Datasets by name (TRAIN.DATASET / TEST.DATASET)."""

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


def build_dataset(name: str, cfg, split: str, single_view: bool = False):
    if name not in DATASET_REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASET_REGISTRY)}")
    return DATASET_REGISTRY[name].from_cfg(cfg, split, single_view=single_view)


def preflight_split(name: str, cfg, split: str) -> None:
    """Read a CSV-listed split now (file, encoding, every label in [0, MODEL.NUM_CLASSES)), so a
    mistake in the test CSV stops the run before training instead of after it. Image datasets are
    checked when they are built."""
    if name in DATASET_REGISTRY and issubclass(DATASET_REGISTRY[name], VideoCSVDataset):
        build_dataset(name, cfg, split)


__all__ = ["ClipConfig", "VideoCSVDataset", "VideoRecord", "read_csv", "DATASET_REGISTRY", "build_dataset",
           "preflight_split"]
