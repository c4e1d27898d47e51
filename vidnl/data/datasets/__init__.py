"""Datasets by name (TRAIN.DATASET / TEST.DATASET): ``DATASET_REGISTRY`` maps a name to a class
with ``from_cfg(cfg, split, single_view=False)``. Re-ID datasets (REID.DATASET) are in
``reid.REID_DATASET_REGISTRY``."""

from ...registry import Registry
from .video_csv import ClipConfig, VideoCSVDataset, VideoRecord, read_csv

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


def preflight_split(name: str, cfg, split: str) -> None:
    """Read a CSV-listed split now (file, encoding, every label in [0, MODEL.NUM_CLASSES)), so a
    mistake in the test CSV stops the run before training instead of after it. Image datasets are
    checked when they are built."""
    if name not in DATASET_REGISTRY or issubclass(DATASET_REGISTRY[name], VideoCSVDataset):  # unknown: the error
        build_dataset(name, cfg, split)


__all__ = ["ClipConfig", "VideoCSVDataset", "VideoRecord", "read_csv", "DATASET_REGISTRY", "build_dataset",
           "list_datasets", "check_dataset_name", "preflight_split"]
