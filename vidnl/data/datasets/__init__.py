"""Datasets by name (TRAIN.DATASET / TEST.DATASET)."""

from .video_csv import ClipConfig, VideoCSVDataset, VideoRecord, read_csv

DATASET_REGISTRY = {"csv": VideoCSVDataset}


def build_dataset(name: str, cfg, split: str, single_view: bool = False):
    if name not in DATASET_REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASET_REGISTRY)}")
    return DATASET_REGISTRY[name].from_cfg(cfg, split, single_view=single_view)


__all__ = ["ClipConfig", "VideoCSVDataset", "VideoRecord", "read_csv", "DATASET_REGISTRY", "build_dataset"]
