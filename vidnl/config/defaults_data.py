"""Config keys for image and dataset-specific data keys (issue: real datasets and data_prep).

``add_config(_C)`` adds them to the defaults (every key with a comment above it, as in
defaults.py); ``ALLOWED_VALUES`` and ``validate(cfg)`` are checked after every merge.
See docs/datasets.md for how each dataset is prepared and which keys it reads.
"""

from fvcore.common.config import CfgNode

from ..errors import ConfigError

# Datasets whose items are single images (clips with T=1); see vidnl/data/datasets/images.py.
IMAGE_DATASETS = ("cifar10", "cifar100", "cub200", "imagefolder")

ALLOWED_VALUES: dict = {
    "DATA.SPLIT": (1, 2, 3),
    "DATA.SOURCE": ("video", "frames"),
    "DATA.MODALITY": ("rgb", "flow", "rgb_flow"),
    "DATA.FLOW_FORMAT": ("jpg", "npz"),
}


def add_config(_C: CfgNode) -> None:
    """Add this area's keys to the defaults."""
    # UCF-101 train/test split (1, 2 or 3) read by the "ucf101" dataset from
    # DATA.PATH_TO_DATA_DIR/split{SPLIT}/ (written by data_prep/prepare_ucf101.py).
    _C.DATA.SPLIT = 1
    # What a path in the CSV files names: "video" (a video file) or "frames" (a folder of frames
    # named by DATA.FRAME_TEMPLATE). A path that is a folder is read as frames either way.
    _C.DATA.SOURCE = "video"
    # File names of the frames in a frame folder, numbered from 1 (str.format template).
    _C.DATA.FRAME_TEMPLATE = "img_{:05d}.jpg"
    # Input of the model: "rgb" (frames), "flow" (2-channel optical flow clips read from
    # DATA.FLOW_DIR; set DATA.INPUT_CHANNEL_NUM 2) or "rgb_flow" (RGB clips as inputs plus the
    # aligned flow clip under the item key "flow", for two-stream / MARS training).
    _C.DATA.MODALITY = "rgb"
    # Folder of the optical flow written by data_prep/extract_flow.py (one sub-folder per video,
    # mirroring the video paths of the CSV files). Needed when DATA.MODALITY is not "rgb".
    _C.DATA.FLOW_DIR = ""
    # Storage of the flow: "jpg" (flow_x_00001.jpg / flow_y_00001.jpg quantised grey JPEGs) or
    # "npz" (flow_00001.npz, float16). Must match extract_flow.py --format.
    _C.DATA.FLOW_FORMAT = "jpg"
    # Flow clips (in pixels) are divided by this value before use, so the usual ±20 px
    # quantisation range becomes about [-1, 1]. In "flow" mode DATA.MEAN / DATA.STD (2 values
    # each) are applied after this.
    _C.DATA.FLOW_SCALE = 20.0
    # Images (cifar10, cifar100): zero padding in pixels around the image before the random
    # crop of DATA.TRAIN_CROP_SIZE (4 with 32-pixel crops is the standard CIFAR augmentation).
    _C.DATA.IMAGE_PADDING = 4
    # Images (cub200, imagefolder): test images are resized to this short side, then centre
    # cropped to DATA.TEST_CROP_SIZE. 0: DATA.TEST_CROP_SIZE / 0.875 (256 for 224 crops).
    _C.DATA.IMAGE_TEST_RESIZE = 0
    # Images (cub200, imagefolder): smallest area fraction of the image kept by the random
    # resized crop in training (0.08 is torchvision's and ImageNet's default).
    _C.DATA.IMAGE_MIN_SCALE = 0.08
    # CUB-200-2011: crop every image to its bounding box (bounding_boxes.txt) before the
    # transforms.
    _C.DATA.USE_BBOX = False


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}: {value!r} is not allowed; {allowed}.")


def validate(cfg: CfgNode) -> None:
    """Cross-key rules of this area (raise ConfigError naming the key)."""
    d = cfg.DATA
    template = d.FRAME_TEMPLATE
    try:
        name = template.format(1)
    except (IndexError, KeyError, ValueError) as e:
        raise ConfigError(
            f"DATA.FRAME_TEMPLATE: {template!r} is not a valid str.format template with one "
            f"positional field such as 'img_{{:05d}}.jpg' ({type(e).__name__}: {e})."
        ) from None
    if name == template.format(2) or "/" in name:
        _fail("DATA.FRAME_TEMPLATE", template, "it must contain one field for the frame number, like "
              "'img_{:05d}.jpg', and name a file inside the frame folder (no '/')")
    if d.FLOW_SCALE <= 0:
        _fail("DATA.FLOW_SCALE", d.FLOW_SCALE, "it must be > 0")
    if d.MODALITY != "rgb" and not d.FLOW_DIR:
        raise ConfigError(
            f"DATA.FLOW_DIR: must name the folder written by data_prep/extract_flow.py when "
            f"DATA.MODALITY is {d.MODALITY!r}; it is empty."
        )
    if d.MODALITY == "flow" and d.INPUT_CHANNEL_NUM != 2:
        raise ConfigError(
            f"DATA.INPUT_CHANNEL_NUM: flow clips have 2 channels (x, y) but DATA.INPUT_CHANNEL_NUM is "
            f"{d.INPUT_CHANNEL_NUM} with DATA.MODALITY 'flow'; set it to 2 (and DATA.MEAN / DATA.STD to 2 "
            f"values, e.g. [0.0, 0.0] and [1.0, 1.0])."
        )
    if d.IMAGE_PADDING < 0:
        _fail("DATA.IMAGE_PADDING", d.IMAGE_PADDING, "it must be >= 0")
    if d.IMAGE_TEST_RESIZE < 0 or 0 < d.IMAGE_TEST_RESIZE < d.TEST_CROP_SIZE:
        _fail("DATA.IMAGE_TEST_RESIZE", d.IMAGE_TEST_RESIZE,
              f"it must be 0 (automatic) or >= DATA.TEST_CROP_SIZE ({d.TEST_CROP_SIZE})")
    if not 0.0 < d.IMAGE_MIN_SCALE <= 1.0:
        _fail("DATA.IMAGE_MIN_SCALE", d.IMAGE_MIN_SCALE, "it must be in (0, 1]")
    for group in ("TRAIN", "TEST"):
        name = cfg[group].DATASET
        if name in IMAGE_DATASETS:
            if d.NUM_FRAMES != 1:
                raise ConfigError(
                    f"DATA.NUM_FRAMES: image dataset {name!r} ({group}.DATASET) gives clips of one frame; "
                    f"set DATA.NUM_FRAMES 1 (got {d.NUM_FRAMES})."
                )
            if d.MODALITY != "rgb" or d.SOURCE != "video":
                raise ConfigError(
                    f"DATA.MODALITY / DATA.SOURCE: image dataset {name!r} ({group}.DATASET) reads RGB images; "
                    f"DATA.MODALITY must be 'rgb' and DATA.SOURCE 'video' (the defaults), got "
                    f"{d.MODALITY!r} / {d.SOURCE!r}."
                )
    if d.USE_BBOX and "cub200" not in (cfg.TRAIN.DATASET, cfg.TEST.DATASET):
        raise ConfigError(
            f"DATA.USE_BBOX: True only applies to the 'cub200' dataset (bounding_boxes.txt), but "
            f"TRAIN.DATASET is {cfg.TRAIN.DATASET!r} and TEST.DATASET {cfg.TEST.DATASET!r}."
        )
