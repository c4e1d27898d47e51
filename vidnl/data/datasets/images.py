"""Image datasets as clips of one frame: CIFAR-10/100, CUB-200-2011 and ImageNet-style folders.

All read the official download layouts directly (see docs/datasets.md):

* ``cifar10`` / ``cifar100``: the python pickle batches in DATA.PATH_TO_DATA_DIR
  (``cifar-10-batches-py``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``;
  ``cifar-100-python``: ``train``, ``test``, ``meta``). "val" and "test" are the test set.
* ``cub200``: ``CUB_200_2011`` with ``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``bounding_boxes.txt``, ``images/``; "val" and "test" are the
  5,794 test images. DATA.USE_BBOX crops each image to its box.
* ``imagefolder``: ``train/<class>/*.JPEG``, ``val/<class>/*`` (``test/<class>/*`` for "test"
  when present, else ``val``); classes are the sorted folder names of ``train``.

Items (as the video datasets'): training ``{"inputs": 1×H×W×C uint8, "label", "index",
"failures", "notes"}``; test ``{"inputs": 1×1×H×W×C uint8, ...}`` (one view), or ``inputs=None`` for an
unreadable image. Augmentations (torchvision.transforms.v2): CIFAR: zero-pad
DATA.IMAGE_PADDING + random crop DATA.TRAIN_CROP_SIZE + flip, test centre crop
DATA.TEST_CROP_SIZE; CUB / folders: RandomResizedCrop DATA.TRAIN_CROP_SIZE (area from
DATA.IMAGE_MIN_SCALE) + flip, test resize to DATA.IMAGE_TEST_RESIZE + centre crop
DATA.TEST_CROP_SIZE; normalisation with DATA.MEAN / DATA.STD happens on the device
(``dataset.normalizer``, :mod:`vidnl.data.model_input`). The randomness of a training
item comes only from ``(RNG_SEED, epoch, index, attempt)``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ...errors import DatasetError
from ..model_input import InputNormalizer

# Per-channel statistics of the training sets (RGB, 0-1 scale), for DATA.MEAN / DATA.STD.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass
class ImageRecord:
    """path: image file (for in-memory CIFAR: ``<batch file>[<row>]``); bbox: (x, y, w, h) or None."""

    path: str
    label: int
    bbox: Optional[tuple] = None


@dataclass
class ImageConfig:
    """Transform settings of an image dataset. ``style``: "cifar" (pad + crop) or "imagenet"
    (random resized crop; resize + centre crop for testing)."""

    style: str = "imagenet"
    train_crop_size: int = 224
    test_crop_size: int = 224
    test_resize: int = 0  # 0: test_crop_size / 0.875
    padding: int = 4
    min_scale: float = 0.08
    random_flip: bool = True
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    use_bbox: bool = False
    num_retries: int = 10
    seed: int = 0
    class_names: list = field(default_factory=list)


def _build_transforms(c: ImageConfig, train: bool) -> v2.Compose:
    """uint8 C×H×W tensor -> uint8 C×h×w (normalisation happens on the device)."""
    if c.style == "cifar":
        geo = [v2.RandomCrop(c.train_crop_size, padding=c.padding)] if train else [v2.CenterCrop(c.test_crop_size)]
    elif c.style == "imagenet":
        if train:
            geo = [v2.RandomResizedCrop(c.train_crop_size, scale=(c.min_scale, 1.0), antialias=True)]
        else:
            resize = c.test_resize or int(round(c.test_crop_size / 0.875))
            geo = [v2.Resize(resize, antialias=True), v2.CenterCrop(c.test_crop_size)]
    else:
        raise ValueError(f"image style must be 'cifar' or 'imagenet', got {c.style!r}")
    if train and c.random_flip:
        geo.append(v2.RandomHorizontalFlip())
    return v2.Compose(geo)


def load_image(path: str, bbox=None) -> torch.Tensor:
    """Read an image file as a 3×H×W uint8 tensor (RGB), cropped to ``bbox`` (x, y, w, h) if given."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if bbox is not None:
            x, y, w, h = bbox
            left, top = max(0, int(round(x))), max(0, int(round(y)))
            right, bottom = min(im.width, int(round(x + w))), min(im.height, int(round(y + h)))
            if right - left >= 2 and bottom - top >= 2:
                im = im.crop((left, top, right, bottom))
        arr = np.asarray(im)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class ImageDataset(Dataset):
    """Images as one-frame clips. ``pixels`` (N×3×H×W uint8) holds in-memory images (CIFAR);
    otherwise each record's file is read with Pillow."""

    def __init__(self, records: Sequence[ImageRecord], mode: str, cfg: ImageConfig,
                 pixels: Optional[np.ndarray] = None):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if not records:
            raise DatasetError("image dataset is empty")
        self.records, self.mode, self.cfg, self.pixels = list(records), mode, cfg, pixels
        self.epoch = 0
        self.transform = _build_transforms(cfg, train=mode == "train")

    @property
    def views_per_video(self) -> int:
        return 1

    @property
    def normalizer(self) -> InputNormalizer:
        """Turns this dataset's batches into model inputs (mean / std of the config)."""
        return InputNormalizer(self.cfg.mean, self.cfg.std)

    def set_epoch(self, epoch: int) -> None:
        """Training items depend on (seed, epoch, index, attempt) only."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def load(self, index: int) -> torch.Tensor:
        """3×H×W uint8 image ``index`` (before transforms)."""
        if self.pixels is not None:
            return torch.from_numpy(self.pixels[index])
        r = self.records[index]
        return load_image(r.path, r.bbox if self.cfg.use_bbox else None)

    def _train_item(self, index: int) -> dict:
        failures = []
        for attempt in range(self.cfg.num_retries + 1):
            rng = np.random.default_rng([self.cfg.seed, self.epoch, index, attempt])
            record = self.records[index]
            try:
                image = self.load(index)
            except Exception as e:  # Pillow raises many types for missing / broken files
                failures.append((record.path, f"cannot read image: {type(e).__name__}: {e}"))
                index = int(rng.integers(0, len(self.records)))
                continue
            with torch.random.fork_rng(devices=[]):  # v2 transforms draw from torch's global RNG
                torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
                x = self.transform(image)
            return {"inputs": x.permute(1, 2, 0).unsqueeze(0), "label": record.label, "index": index, "failures": failures,
                    "notes": []}
        raise RuntimeError(f"{self.cfg.num_retries + 1} images in a row could not be read; the last: "
                           f"{failures[-1][0]} ({failures[-1][1]}). Check the dataset folder.")

    def _test_item(self, index: int) -> dict:
        record = self.records[index]
        try:
            image = self.load(index)
        except Exception as e:
            return {"inputs": None, "label": record.label, "index": index,
                    "failures": [(record.path, f"cannot read image: {type(e).__name__}: {e}")]}
        return {"inputs": self.transform(image).permute(1, 2, 0)[None, None], "label": record.label, "index": index, "failures": []}

    def __getitem__(self, index: int) -> dict:
        return self._train_item(index) if self.mode == "train" else self._test_item(index)

    # -- construction from the config ------------------------------------------------------------
    @staticmethod
    def image_config(cfg, style: str, **extra) -> ImageConfig:
        d = cfg.DATA
        return ImageConfig(style=style, train_crop_size=d.TRAIN_CROP_SIZE, test_crop_size=d.TEST_CROP_SIZE,
                           test_resize=d.IMAGE_TEST_RESIZE, padding=d.IMAGE_PADDING, min_scale=d.IMAGE_MIN_SCALE,
                           random_flip=d.RANDOM_FLIP, mean=list(d.MEAN), std=list(d.STD), use_bbox=d.USE_BBOX,
                           num_retries=cfg.DATA_LOADER.NUM_RETRIES, seed=cfg.RNG_SEED, **extra)

    @staticmethod
    def check_labels(records: Sequence[ImageRecord], num_classes: int, where: str, cfg) -> None:
        top = max(r.label for r in records)
        if top >= cfg.MODEL.NUM_CLASSES or num_classes != cfg.MODEL.NUM_CLASSES:
            raise DatasetError(f"{where} has {num_classes} classes (labels up to {top}) but MODEL.NUM_CLASSES is "
                               f"{cfg.MODEL.NUM_CLASSES}; set MODEL.NUM_CLASSES {num_classes}")


# -- CIFAR ---------------------------------------------------------------------------------------
def _unpickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise DatasetError(f"CIFAR file not found: {path} (DATA.PATH_TO_DATA_DIR must be the extracted "
                           f"'cifar-10-batches-py' or 'cifar-100-python' folder)")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DatasetError(f"{path}: not a CIFAR python pickle ({type(e).__name__}: {e})") from None


def _key(d: dict, path: str, key: bytes):
    if key not in d:
        raise DatasetError(f"{path}: missing key {key!r} (has {sorted(d)})")
    return d[key]


def read_cifar(root: str, variant: str, split: str) -> tuple[list[ImageRecord], np.ndarray, list[str]]:
    """Records, pixels N×3×32×32 uint8 and class names of CIFAR-10 (``variant`` "cifar10") or
    CIFAR-100 (fine labels) for ``split`` "train" or "val"/"test" (the test set)."""
    if variant == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta_file, names_key = b"labels", "batches.meta", b"label_names"
    elif variant == "cifar100":
        files = ["train"] if split == "train" else ["test"]
        label_key, meta_file, names_key = b"fine_labels", "meta", b"fine_label_names"
    else:
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    meta_path = os.path.join(root, meta_file)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _key(_unpickle(meta_path), meta_path, names_key)]
    records, pixels = [], []
    for name in files:
        path = os.path.join(root, name)
        batch = _unpickle(path)
        data = np.asarray(_key(batch, path, b"data"))
        labels = list(_key(batch, path, label_key))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
            raise DatasetError(f"{path}: expected b'data' uint8 N×3072 and N labels, got {data.dtype} "
                               f"{data.shape} and {len(labels)} labels")
        pixels.append(data.reshape(-1, 3, 32, 32))
        records += [ImageRecord(f"{path}[{i}]", int(lab)) for i, lab in enumerate(labels)]
    bad = [r for r in records if not 0 <= r.label < len(names)]
    if bad:
        raise DatasetError(f"{bad[0].path}: label {bad[0].label} outside 0..{len(names) - 1} ({meta_path})")
    return records, np.concatenate(pixels), names


class CIFAR10Dataset(ImageDataset):
    VARIANT = "cifar10"

    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "ImageDataset":
        records, pixels, names = read_cifar(cfg.DATA.PATH_TO_DATA_DIR, cls.VARIANT, split)
        cls.check_labels(records, len(names), f"{cls.VARIANT} ({cfg.DATA.PATH_TO_DATA_DIR})", cfg)
        mode = "train" if split == "train" else "test"
        return cls(records, mode, cls.image_config(cfg, "cifar", class_names=names), pixels)


class CIFAR100Dataset(CIFAR10Dataset):
    VARIANT = "cifar100"


# -- CUB-200-2011 --------------------------------------------------------------------------------
def _read_table(path: str, columns: int) -> dict[int, list[str]]:
    """``id field...`` lines -> {id: fields}; errors name the file and line."""
    if not os.path.isfile(path):
        raise DatasetError(f"CUB-200-2011 file not found: {path} (DATA.PATH_TO_DATA_DIR must be the extracted "
                           f"'CUB_200_2011' folder)")
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != columns + 1 or not parts[0].isdigit():
                raise DatasetError(f"{path}:{lineno}: expected an image id and {columns} field(s), got {line.strip()!r}")
            out[int(parts[0])] = parts[1:]
    return out


def read_cub(root: str, split: str) -> tuple[list[ImageRecord], list[str]]:
    """Records (0-based labels, boxes x, y, w, h) of the CUB-200-2011 ``split`` ("train": the
    images marked 1 in train_test_split.txt; "val"/"test": those marked 0) and class names."""
    images = _read_table(os.path.join(root, "images.txt"), 1)
    labels = _read_table(os.path.join(root, "image_class_labels.txt"), 1)
    is_train = _read_table(os.path.join(root, "train_test_split.txt"), 1)
    boxes_path = os.path.join(root, "bounding_boxes.txt")
    boxes = _read_table(boxes_path, 4) if os.path.isfile(boxes_path) else {}
    classes_path = os.path.join(root, "classes.txt")
    names = ([v[0] for _, v in sorted(_read_table(classes_path, 1).items())] if os.path.isfile(classes_path)
             else sorted({os.path.dirname(v[0]) for v in images.values()}))
    want = "1" if split == "train" else "0"
    records = []
    for image_id in sorted(images):
        for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
            if image_id not in table:
                raise DatasetError(f"{os.path.join(root, name)}: no entry for image id {image_id} of images.txt")
        if is_train[image_id][0] != want:
            continue
        box = tuple(float(v) for v in boxes[image_id]) if image_id in boxes else None
        records.append(ImageRecord(os.path.join(root, "images", images[image_id][0]), int(labels[image_id][0]) - 1, box))
    if not records:
        raise DatasetError(f"{root}: no {split} images in train_test_split.txt")
    return records, names


class CUB200Dataset(ImageDataset):
    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "ImageDataset":
        root = cfg.DATA.PATH_TO_DATA_DIR
        records, names = read_cub(root, split)
        if cfg.DATA.USE_BBOX:
            missing = [r.path for r in records if r.bbox is None]
            if missing:
                raise DatasetError(f"DATA.USE_BBOX is True but {os.path.join(root, 'bounding_boxes.txt')} has no box "
                                   f"for {len(missing)} images, e.g. {missing[0]}")
        cls.check_labels(records, len(names), f"CUB-200-2011 ({root})", cfg)
        mode = "train" if split == "train" else "test"
        return cls(records, mode, cls.image_config(cfg, "imagenet", class_names=names))


# -- ImageNet-style folders ----------------------------------------------------------------------
def list_class_folders(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise DatasetError(f"image folder not found: {folder} (expected <class>/<image> sub-folders)")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DatasetError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>; for the ImageNet "
                           f"validation set run data_prep/prepare_imagenet_val.py first)")
    return classes


def read_image_folder(root: str, split: str) -> tuple[list[ImageRecord], list[str]]:
    """Records of ``root/<split folder>/<class>/**/<image>`` with labels from the sorted class
    folders of ``root/train`` (of the split folder itself when there is no train folder).
    "test" reads ``root/test`` when it has class folders, else ``root/val``."""
    sub = "train" if split == "train" else split
    if split == "test" and not (os.path.isdir(os.path.join(root, "test")) and
                                any(e.is_dir() for e in os.scandir(os.path.join(root, "test")))):
        sub = "val"
    folder = os.path.join(root, sub)
    train_dir = os.path.join(root, "train")
    classes = list_class_folders(train_dir if os.path.isdir(train_dir) else folder)
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for cls_name in list_class_folders(folder):
        if cls_name not in index:
            raise DatasetError(f"{os.path.join(folder, cls_name)}: class folder not in {train_dir}")
        for dirpath, dirnames, filenames in os.walk(os.path.join(folder, cls_name)):
            dirnames.sort()
            records += [ImageRecord(os.path.join(dirpath, f), index[cls_name]) for f in sorted(filenames)
                        if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not records:
        raise DatasetError(f"{folder}: no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return records, classes


class ImageFolderDataset(ImageDataset):
    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "ImageDataset":
        root = cfg.DATA.PATH_TO_DATA_DIR
        records, names = read_image_folder(root, split)
        cls.check_labels(records, len(names), f"image folder {root}", cfg)
        mode = "train" if split == "train" else "test"
        return cls(records, mode, cls.image_config(cfg, "imagenet", class_names=names))
