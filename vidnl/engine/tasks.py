"""Training tasks: what differs between training a video classifier, MARS and a re-ID model.

The one :class:`vidnl.engine.train.Trainer` owns optimisation, AMP, the LR schedule,
checkpoints, auto-resume, logging, split-invariant BN/dropout, DDP and TRAIN.COMPILE; a
:class:`Task` supplies the rest:

* the model (``build_model``) and what initialises a new run besides TRAIN.CHECKPOINT_FILE_PATH
  (``init_new_run``: REID.PRETRAINED);
* the training data (``build_data``: dataset, sampler giving this process its contiguous share
  of every global batch, loader; ``set_epoch``) and the validation data;
* what a batch holds and how it becomes (model inputs, targets) (``inputs``);
* the loss, returning (loss, logits for the training top-1, named parts for the logs)
  (``loss``; ``loss_parts`` names the parts);
* validation (``validate``) with its best-metric, and the line it logs (``val_line``).

Tasks: :class:`ClassificationTask` (cross-entropy, multi-view video top-1),
:class:`MARSDistillationTask` (CE + α · distillation from the flow clips of the batch) and
:class:`ReIDTask` (CE + batch-hard triplet over P×K identity batches, CMC/mAP with rank-1 as the
best metric). ``task_for(cfg)`` picks one from MODEL.TASK and MODEL.ARCH.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.datasets import build_dataset, check_listed_files, preflight_split
from ..data.datasets.reid import FrameTransform, ReIDTrainClips, build_reid_data, collate_reid_train
from ..data.decoding import resolve_backend
from ..data.loader import build_test_loader, build_train_loader
from ..errors import DatasetError
from ..data.reid_sampling import RandomIdentitySampler
from ..models import build_model
from ..models.weights import unwrap
from ..data.samplers import GlobalBatchSampler
from .evaluate import evaluate, metric_summary, summary
from .losses import reid_loss
from .reid import build_reid_model, evaluate_reid, log_data, metrics_line, scalar_summary
from .precision import autocast_context

logger = logging.getLogger(__name__)


class Task:
    """The task seam of the Trainer (see the module docstring). Subclasses set the attributes:

    ``best_key``: key of the best validation metric in ``train()``'s result;
    ``acc_name``: the training accuracy's stat prefix (``<acc_name>_acc`` / ``_err``);
    ``loss_parts``: names of the loss parts ``loss`` returns (logged, summed over processes);
    ``decodes_videos``: batches carry video decode failures (FailureLog, decode_failures.json).
    """

    best_key = "best_val_top1"
    acc_name = "top1"
    loss_parts: tuple[str, ...] = ()
    decodes_videos = False
    init_keys: tuple[str, ...] = ("TRAIN.CHECKPOINT_FILE_PATH",)  # initialise a new run only

    def __init__(self, cfg):
        self.cfg = cfg
        self.train_set = self.sampler = self.loader = None
        self.rank, self.world = 0, 1

    def prepare(self) -> None:
        """Read what the model depends on (after logging is set up)."""

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def init_new_run(self, model: nn.Module) -> None:
        """Initialise the weights of a new run (before TRAIN.CHECKPOINT_FILE_PATH is loaded)."""

    def build_data(self, rank: int, world: int) -> None:
        """Set ``train_set``, ``sampler`` (this process's share of every global batch), ``loader``
        and the validation data."""
        raise NotImplementedError

    @property
    def has_validation(self) -> bool:
        return False

    def set_epoch(self, epoch: int, start_step: int) -> None:
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start_step=start_step)

    def num_steps(self) -> int:
        return self.sampler.num_steps()

    def no_full_batch(self) -> str:
        return (f"the training set ({len(self.train_set)} samples) gives no full batch of "
                f"TRAIN.BATCH_SIZE={self.cfg.TRAIN.BATCH_SIZE}")

    def inputs(self, batch: dict, device: torch.device) -> tuple[tuple, torch.Tensor]:
        """A loader batch -> (model inputs, targets B), on ``device``."""
        raise NotImplementedError

    def loss(self, outputs, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Model outputs -> (scalar loss, logits B×K for the training top-1, {part: float})."""
        raise NotImplementedError

    def validate(self, model: nn.Module, device: torch.device, amp: torch.dtype | None) -> tuple[dict, float, dict, dict]:
        """-> (results, the best-metric's value, the val_epoch json_stats fields, TensorBoard scalars)."""
        raise NotImplementedError

    def val_line(self, epoch: int, res: dict, best: float) -> str:
        raise NotImplementedError


class ClassificationTask(Task):
    """Video classification: clips of TRAIN.DATASET in GlobalBatchSampler shares, cross-entropy
    (MODEL.LABEL_SMOOTHING) of the logits, multi-view validation top-1 on the val split."""

    decodes_videos = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.val_loader = None

    def build_data(self, rank: int, world: int) -> None:
        cfg = self.cfg
        self.rank, self.world = rank, world
        self.train_set = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
        logger.info("video decoding: %s (DATA.DECODING_BACKEND %s)", resolve_backend(cfg.DATA.DECODING_BACKEND),
                    cfg.DATA.DECODING_BACKEND)
        limit = cfg.DATA_LOADER.MAX_BAD_FRACTION
        # every split's CSV, labels and listed files before any training
        check_listed_files(self.train_set, "train.csv", limit)
        if cfg.TEST.ENABLE:
            split = cfg.TEST.SPLIT
            check_listed_files(preflight_split(cfg.TEST.DATASET, cfg, split), f"{split}.csv", limit)
        self.sampler = GlobalBatchSampler(len(self.train_set), cfg.TRAIN.BATCH_SIZE, cfg.RNG_SEED, rank, world)
        self.loader = build_train_loader(cfg, self.train_set, self.sampler)
        if cfg.TRAIN.EVAL_PERIOD > 0:
            self.val_loader = build_test_loader(cfg, "val", single_view=True, rank=rank, world_size=world)
            check_listed_files(self.val_loader.dataset, "val.csv", limit)
        logger.info("training on %d videos (%d iterations/epoch, global batch %d = %d x %d), validating on %s",
                    len(self.train_set), self.sampler.num_steps(), cfg.TRAIN.BATCH_SIZE, world,
                    self.sampler.local, f"{len(self.val_loader.dataset)} videos" if self.val_loader else "nothing")

    @property
    def has_validation(self) -> bool:
        return self.val_loader is not None

    def no_full_batch(self) -> str:
        return (f"the training set ({len(self.train_set)} videos) gives no full batch of "
                f"TRAIN.BATCH_SIZE={self.cfg.TRAIN.BATCH_SIZE}")

    def inputs(self, batch: dict, device: torch.device) -> tuple[tuple, torch.Tensor]:
        x = self.train_set.normalizer(batch["inputs"], device)
        return (x,), batch["labels"].to(device, non_blocking=True)

    def loss(self, outputs, targets):
        logits = outputs
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.MODEL.LABEL_SMOOTHING)
        return loss, logits, {}

    def validate(self, model, device, amp):
        with autocast_context(device, amp):
            res = evaluate(model, self.val_loader, device, clips_per_forward=self.cfg.TEST.BATCH_SIZE, desc="val")
        return res, res["video_top1"], summary(res), metric_summary(res)

    def val_line(self, epoch, res, best):
        return f"epoch {epoch + 1}: val top-1 {res['video_top1']:.2f}% (best {best:.2f}%)"


class MARSDistillationTask(ClassificationTask):
    """MARS (Crasto et al. 2019): the RGB student's cross-entropy + α · the distillation term the
    model returns for the batch's optical-flow clips (``model(x, flow) -> (logits, α·MSE)``)."""

    loss_parts = ("ce", "distill")

    def inputs(self, batch, device):
        if "flow" not in batch:
            raise DatasetError("MODEL.ARCH mars trains with optical flow: set DATA.FLOW_DIR")
        (x,), y = super().inputs(batch, device)
        return (x, batch["flow"].to(device, non_blocking=True)), y

    def loss(self, outputs, targets):
        logits, distill = outputs
        ce = F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.MODEL.LABEL_SMOOTHING)
        return ce + distill, logits, {"ce": float(ce.detach()), "distill": float(distill.detach())}


class ReIDTask(Task):
    """Video person re-ID (MODEL.TASK reid) on one split: P×K identity batches
    (RandomIdentitySampler, this process's contiguous slice of each global batch), REID.SEQ_LEN
    frame clips, REID.CE_WEIGHT · CE + REID.TRIPLET_WEIGHT · batch-hard triplet (over the global
    batch, see :func:`vidnl.engine.losses.reid_loss`), CMC/mAP validation on the query/gallery
    split with features extracted on each process's shard of tracklets and gathered (rank-1 is
    the best metric). ``data``: an already loaded :class:`ReIDData` (else REID.* is read)."""

    best_key = "best_rank1"
    acc_name = "id_top1"
    loss_parts = ("ce", "triplet")
    init_keys = ("TRAIN.CHECKPOINT_FILE_PATH", "REID.PRETRAINED")

    def __init__(self, cfg, data=None):
        super().__init__(cfg)
        self.data = data

    def prepare(self) -> None:
        if self.data is None:
            self.data = build_reid_data(self.cfg)
        log_data(self.data)
        if self.data.num_train_pids < 2:
            raise DatasetError(f"{self.data.name}: {self.data.num_train_pids} training identities; re-ID training "
                               f"needs at least 2")

    def build_model(self) -> nn.Module:
        return build_reid_model(self.cfg, self.data.num_train_pids)

    def init_new_run(self, model: nn.Module) -> None:
        if self.cfg.REID.PRETRAINED:
            unwrap(model).load_backbone_weights(self.cfg.REID.PRETRAINED)
            logger.info("backbone initialised from REID.PRETRAINED=%s", self.cfg.REID.PRETRAINED)

    def build_data(self, rank: int, world: int) -> None:
        cfg, r = self.cfg, self.cfg.REID
        self.rank, self.world = rank, world
        self.sampler = RandomIdentitySampler([t.pid for t in self.data.train], cfg.TRAIN.BATCH_SIZE,
                                             r.NUM_INSTANCES, cfg.RNG_SEED, rank, world)
        if self.sampler.num_steps() == 0:
            raise DatasetError(self.no_full_batch())
        self.train_set = ReIDTrainClips(self.data.train, FrameTransform.from_cfg(cfg), r.SEQ_LEN, r.SAMPLE_MODE,
                                        r.RANDOM_FLIP, cfg.RNG_SEED)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate_reid_train,
                                 num_workers=cfg.DATA_LOADER.NUM_WORKERS,
                                 pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
                                 generator=torch.Generator().manual_seed(cfg.RNG_SEED))
        logger.info("re-ID training on %d tracklets of %d identities: %d iterations/epoch of %d identities x %d "
                    "tracklets (global batch %d = %d x %d), validating on %s", len(self.data.train),
                    self.data.num_train_pids, self.sampler.num_steps(), self.sampler.p, self.sampler.k,
                    cfg.TRAIN.BATCH_SIZE, world, self.sampler.local,
                    f"{len(self.data.query)} queries / {len(self.data.gallery)} gallery tracklets"
                    if self.has_validation else "nothing")

    @property
    def has_validation(self) -> bool:
        return self.cfg.TRAIN.EVAL_PERIOD > 0

    def no_full_batch(self) -> str:
        return (f"{self.data.name}: {self.data.num_train_pids} training identities give no full batch of "
                f"TRAIN.BATCH_SIZE {self.cfg.TRAIN.BATCH_SIZE} / REID.NUM_INSTANCES {self.cfg.REID.NUM_INSTANCES} = "
                f"{self.cfg.TRAIN.BATCH_SIZE // self.cfg.REID.NUM_INSTANCES} identities")

    def inputs(self, batch, device):
        x = self.train_set.transform.normalizer(batch["inputs"], device)
        return (x,), batch["labels"].to(device, non_blocking=True)

    def loss(self, outputs, targets):
        r = self.cfg.REID
        logits, feats = outputs
        loss, parts = reid_loss(logits.float(), feats.float(), targets, ce_weight=r.CE_WEIGHT, triplet_weight=r.TRIPLET_WEIGHT,
                                margin=r.TRIPLET_MARGIN, label_smoothing=self.cfg.MODEL.LABEL_SMOOTHING,
                                global_batch=self.world > 1)
        return loss, logits, parts

    def validate(self, model, device, amp):
        res = evaluate_reid(unwrap(model), self.data, self.cfg, device, rank=self.rank, world_size=self.world)
        scalars = scalar_summary(res)
        return res, res["rank1"], scalars, scalars

    def val_line(self, epoch, res, best):
        return (f"epoch {epoch + 1}: {metrics_line(res, self.cfg.REID.RANKS)} on {res['num_queries']} queries "
                f"(best rank-1 {best:.2f}%)")


def task_for(cfg) -> Task:
    """The task of ``cfg``: ReIDTask for MODEL.TASK reid, MARSDistillationTask for MODEL.ARCH
    mars, else ClassificationTask."""
    if cfg.MODEL.TASK == "reid":
        return ReIDTask(cfg)
    if cfg.MODEL.ARCH == "mars":
        return MARSDistillationTask(cfg)
    return ClassificationTask(cfg)
