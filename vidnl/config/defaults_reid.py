"""Config keys for video person re-identification (group REID, used when MODEL.TASK is "reid").

``add_config(_C)`` adds them to the defaults (every key with a comment above it, as in
defaults.py); ``ALLOWED_VALUES`` and ``validate(cfg)`` are checked after every merge.

Other keys the re-ID engine reads: TRAIN.BATCH_SIZE (P identities x REID.NUM_INSTANCES
tracklets), TEST.BATCH_SIZE (clips per forward pass when extracting features), SOLVER.* (optimizer
and LR schedule), MODEL.LABEL_SMOOTHING (of the cross-entropy term), RESNET.BASE_WIDTH (64: the
torchvision ResNet-50), NONLOCAL.* (blocks inside the backbone), TRAIN.EVAL_PERIOD (CMC/mAP every
N epochs). MODEL.NUM_CLASSES is set from the number of training identities.
"""

from fvcore.common.config import CfgNode

from ..errors import ConfigError

ALLOWED_VALUES: dict = {
    "REID.SAMPLE_MODE": ("random_consecutive", "restricted_random"),
    "REID.DISTANCE": ("euclidean", "cosine"),
}

# Architectures that produce re-ID embeddings (MODEL.ARCH when MODEL.TASK is "reid").
REID_ARCHS = ("resnet50tp",)


def add_config(_C: CfgNode) -> None:
    """Add this area's keys to the defaults."""
    _C.REID = CfgNode()
    # Dataset: "mars" (MARS, fixed query/gallery), "ilidsvid" (iLIDS-VID, 10 splits) or "prid"
    # (PRID-2011 multi-shot, 10 splits). Layouts in docs/reid.md.
    _C.REID.DATASET = "mars"
    # Folder of the official download (e.g. the one holding bbox_train/, bbox_test/ and info/ for MARS).
    _C.REID.ROOT = ""
    # iLIDS-VID / PRID: which train/test split (0-based); -1 runs every split (each trained in
    # OUTPUT_DIR/split_XX) and reports the mean, as the protocol does. MARS has one split: use 0.
    _C.REID.SPLIT_ID = 0
    # Frames per training clip and per test chunk (T). Gao & Nevatia's ResNet50tp uses 4. The test
    # embeds every frame in chunks of SEQ_LEN, the last chunk's frames repeated cyclically to fill it.
    _C.REID.SEQ_LEN = 4
    # Training clip from a tracklet: "random_consecutive" (SEQ_LEN consecutive frames at a random
    # start) or "restricted_random" (the tracklet cut into SEQ_LEN equal chunks, one random frame
    # from each). Tracklets shorter than SEQ_LEN repeat their last frame.
    _C.REID.SAMPLE_MODE = "random_consecutive"
    # K: tracklets per identity in a training batch; TRAIN.BATCH_SIZE / K identities per batch.
    _C.REID.NUM_INSTANCES = 4
    # Frame height after resizing (pixels).
    _C.REID.HEIGHT = 256
    # Frame width after resizing (pixels).
    _C.REID.WIDTH = 128
    # Random horizontal flip of training clips (the same flip for every frame of a clip).
    _C.REID.RANDOM_FLIP = True
    # Per-channel mean (RGB, 0-1 scale) subtracted from frames; ImageNet's by default.
    _C.REID.MEAN = [0.485, 0.456, 0.406]
    # Per-channel standard deviation (RGB) frames are divided by; ImageNet's by default.
    _C.REID.STD = [0.229, 0.224, 0.225]
    # Margin of the batch-hard triplet loss (on Euclidean distances of the embeddings).
    _C.REID.TRIPLET_MARGIN = 0.3
    # Weight of the cross-entropy (identity classification) term; label smoothing is
    # MODEL.LABEL_SMOOTHING.
    _C.REID.CE_WEIGHT = 1.0
    # Weight of the batch-hard triplet term.
    _C.REID.TRIPLET_WEIGHT = 1.0
    # Distance used to rank the gallery: "euclidean" or "cosine" (1 - cosine similarity).
    _C.REID.DISTANCE = "euclidean"
    # BN-neck (Luo et al. 2019): BatchNorm1d after the pooled features; the triplet loss uses the
    # features before it, the classifier and the test embedding the features after it.
    _C.REID.BNNECK = False
    # Embedding width: 0 uses the pooled backbone features (2048 for ResNet-50, as ResNet50tp);
    # > 0 adds a linear layer + BN to this many dimensions.
    _C.REID.EMBED_DIM = 0
    # Torchvision-layout ResNet-50 state dict (e.g. ImageNet weights saved with
    # torch.save(resnet50.state_dict())) loaded into the backbone of a new run; "" for random
    # initialisation. Nothing is ever downloaded. Missing / unexpected keys are logged.
    _C.REID.PRETRAINED = ""
    # Identities excluded from evaluation as junk (MARS: -1, as in the official evaluation_mars.m;
    # identity 0, the distractors, stays in the gallery as non-matches).
    _C.REID.JUNK_PIDS = [-1]
    # PRID-2011: a person is used only with at least this many frames in each camera (Wang et al.
    # 2014 rule: 21, giving 178 of the 200 persons seen by both cameras).
    _C.REID.PRID_MIN_FRAMES = 21
    # CMC ranks that are reported (1-based).
    _C.REID.RANKS = [1, 5, 10, 20]


def validate(cfg: CfgNode) -> None:
    """Cross-key rules of this area (raise ConfigError naming the key)."""
    r = cfg.REID
    reid = cfg.MODEL.TASK == "reid"
    if reid and cfg.MODEL.ARCH not in REID_ARCHS:
        raise ConfigError(f"MODEL.ARCH: {cfg.MODEL.ARCH!r} gives no re-ID embedding; with MODEL.TASK 'reid' "
                          f"choose one of {', '.join(map(repr, REID_ARCHS))}.")
    if not reid and cfg.MODEL.ARCH in REID_ARCHS:
        raise ConfigError(f"MODEL.ARCH: {cfg.MODEL.ARCH!r} is a re-ID model; set MODEL.TASK 'reid' "
                          f"(MODEL.TASK is {cfg.MODEL.TASK!r}).")
    for key in ("SEQ_LEN", "NUM_INSTANCES", "HEIGHT", "WIDTH", "PRID_MIN_FRAMES"):
        if r[key] < 1:
            raise ConfigError(f"REID.{key}: must be >= 1, got {r[key]!r}.")
    for key in ("TRIPLET_MARGIN", "CE_WEIGHT", "TRIPLET_WEIGHT", "EMBED_DIM"):
        if r[key] < 0:
            raise ConfigError(f"REID.{key}: must be >= 0, got {r[key]!r}.")
    if r.CE_WEIGHT == 0 and r.TRIPLET_WEIGHT == 0:
        raise ConfigError("REID.CE_WEIGHT and REID.TRIPLET_WEIGHT are both 0: nothing to train; "
                          "set at least one > 0.")
    if r.SPLIT_ID < -1:
        raise ConfigError(f"REID.SPLIT_ID: must be -1 (all splits) or a split index >= 0, got {r.SPLIT_ID!r}.")
    if r.DATASET == "mars" and r.SPLIT_ID != 0:
        raise ConfigError(f"REID.SPLIT_ID: MARS has one fixed query/gallery split; use 0, got {r.SPLIT_ID!r}.")
    for key in ("MEAN", "STD"):
        v = r[key]
        if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ConfigError(f"REID.{key}: expected 3 numbers (RGB), got {list(v)!r}.")
    if any(s == 0 for s in r.STD):
        raise ConfigError(f"REID.STD: values must be non-zero, got {list(r.STD)!r}.")
    if not r.RANKS or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in r.RANKS):
        raise ConfigError(f"REID.RANKS: expected a non-empty list of ranks >= 1, got {list(r.RANKS)!r}.")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in r.JUNK_PIDS):
        raise ConfigError(f"REID.JUNK_PIDS: expected a list of integer identities, got {list(r.JUNK_PIDS)!r}.")
    if reid:
        b, k = cfg.TRAIN.BATCH_SIZE, r.NUM_INSTANCES
        if b % k:
            raise ConfigError(f"TRAIN.BATCH_SIZE: {b} is not divisible by REID.NUM_INSTANCES {k}; a re-ID batch is "
                              f"P identities x K tracklets (e.g. TRAIN.BATCH_SIZE {max(k, b // k * k)}).")
        if r.TRIPLET_WEIGHT > 0 and b // k < 2:
            raise ConfigError(f"TRAIN.BATCH_SIZE: {b} / REID.NUM_INSTANCES {k} gives {b // k} identity per batch; the "
                              f"triplet loss needs at least 2 (TRAIN.BATCH_SIZE >= {2 * k}).")
        if r.TRIPLET_WEIGHT > 0 and k < 2:
            raise ConfigError(f"REID.NUM_INSTANCES: {k} leaves no positive pair for the triplet loss; use >= 2 "
                              f"(or REID.TRIPLET_WEIGHT 0).")
