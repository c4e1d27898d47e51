"""Default configuration of vidnl: the schema every YAML file and override is checked against.

Every key has a comment above it saying what it does. Keys are grouped as in PySlowFast.
A YAML file may only set keys that exist here (see ``vidnl.config.validate``); new keys are
added here first, with a comment, and validation rules (allowed values) in ``validate.py``.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------------------------
# Folder for checkpoints, logs, TensorBoard events and predictions of this run.
_C.OUTPUT_DIR = "./output"
# Seed of every random number generator (python, numpy, torch, data sampling).
_C.RNG_SEED = 0
# Number of GPUs to use; 0 runs on the CPU. If CUDA is unavailable the CPU is used anyway.
_C.NUM_GPUS = 1
# Print a log line every LOG_PERIOD training iterations.
_C.LOG_PERIOD = 10
# Number of CPU threads torch may use (0: leave torch's default).
_C.NUM_THREADS = 0

# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
_C.TRAIN = CfgNode()
# Run training.
_C.TRAIN.ENABLE = True
# Dataset name (registered in vidnl.data.datasets), e.g. "csv" for the generic CSV video dataset.
_C.TRAIN.DATASET = "csv"
# Clips per training iteration, over all processes (the global batch; each of W torchrun
# processes takes BATCH_SIZE / W). Scale SOLVER.BASE_LR with it.
_C.TRAIN.BATCH_SIZE = 8
# Evaluate on the validation split every EVAL_PERIOD epochs (0: never).
_C.TRAIN.EVAL_PERIOD = 1
# Save a checkpoint every CHECKPOINT_PERIOD epochs (the last epoch is always saved).
_C.TRAIN.CHECKPOINT_PERIOD = 1
# Also save a checkpoint every CHECKPOINT_PERIOD_ITERS iterations inside an epoch (0: never);
# a run killed at any point then resumes from there with the same result.
_C.TRAIN.CHECKPOINT_PERIOD_ITERS = 0
# Keep only the newest KEEP_CHECKPOINTS checkpoints, epoch and mid-epoch (0: keep all).
_C.TRAIN.KEEP_CHECKPOINTS = 3
# Resume automatically from the newest checkpoint in OUTPUT_DIR/checkpoints if there is one.
_C.TRAIN.AUTO_RESUME = True
# Initial weights (a vidnl checkpoint or a plain state dict). Ignored when auto-resume finds a
# checkpoint of this run in OUTPUT_DIR/checkpoints: resuming the run wins.
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Loading is strict: a tensor of the model missing from CHECKPOINT_FILE_PATH, or one of the file
# the model lacks, is an error. CHECKPOINT_SKIP lists fnmatch patterns of vidnl keys that are not
# loaded and may differ, e.g. ["head.*"] to fine-tune to other classes, ["head.*",
# "*.nonlocal_blocks.*"] to start a nonlocal net from a backbone pretrained without blocks.
_C.TRAIN.CHECKPOINT_SKIP = []
# Fine-tuning configs set this: training stops at start (exit 2) when CHECKPOINT_FILE_PATH is
# empty and there is no checkpoint of the run to resume, instead of training from random weights.
_C.TRAIN.REQUIRE_CHECKPOINT_FILE = False
# Allow loading CHECKPOINT_FILE_PATH when some parameter shapes differ (those are skipped and
# logged). Otherwise a mismatch is an error.
_C.TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH = False
# Also restore optimizer state and epoch from CHECKPOINT_FILE_PATH (continue that run).
_C.TRAIN.CHECKPOINT_LOAD_OPTIMIZER = False
# Mixed precision: autocast to TRAIN.AMP_DTYPE in training, validation and the re-ID test
# (weights, optimizer and losses stay float32; vidnl/engine/precision.py).
_C.TRAIN.MIXED_PRECISION = False
# "auto": bfloat16 on the CPU and on GPUs of compute capability >= 8.0 (A100, H100), float16 on
# older GPUs; "bfloat16" (no gradient scaler); "float16" (GPU only, with a gradient scaler).
_C.TRAIN.AMP_DTYPE = "auto"
# Clip the global gradient norm to this value (0: no clipping).
_C.TRAIN.CLIP_GRAD_NORM = 0.0
# torch.compile the model for training (the first step compiles: minutes on a CPU, needs a C++
# compiler for "inductor"). If compiling fails, the run logs why and continues in eager mode.
# Validation runs the eager model (or the inference-compiled one with TEST.COMPILE).
_C.TRAIN.COMPILE = False
# torch.compile backend: "inductor" (generated kernels), "aot_eager" (graph capture only; for
# checking) or "eager".
_C.TRAIN.COMPILE_BACKEND = "inductor"
# Store the model's 3-D convolution weights and its input channels-last (B×T×H×W×C in memory;
# shapes unchanged), for training, testing and prediction alike. Pays where the machine's
# kernels prefer that order (benchmarks/peers.py --vidnl-mode channels_last measures it).
# Networks of 2-D convolutions (re-ID frame backbones, CIFAR PreResNets) refuse it.
_C.TRAIN.CHANNELS_LAST = False

# ---------------------------------------------------------------------------------------------
# Testing (multi-view evaluation)
# ---------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
# Run the multi-view test after training (or alone, with TRAIN.ENABLE False).
_C.TEST.ENABLE = True
# Dataset name for testing.
_C.TEST.DATASET = "csv"
# Clips per forward pass during testing. A video's views are never split across loader items.
_C.TEST.BATCH_SIZE = 16
# Weights to test. Empty: the newest checkpoint in OUTPUT_DIR/checkpoints.
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Temporal clips per video, uniformly spaced so that together they span first to last frame.
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
# Spatial crops per clip: 1 (centre) or 3 (left/centre/right, or top/centre/bottom).
_C.TEST.NUM_SPATIAL_CROPS = 3
# How the views of a video are combined: "sum_softmax" (sum of per-view softmax scores, as in
# the NL paper) or "mean_logits" (average of raw logits). Both are always reported; this picks
# the one used for the headline video accuracy and the saved predictions. With MODEL.TEST_HEAD
# fully_conv the model outputs log-probabilities: sum_softmax sums the head's probabilities
# (PySlowFast's TestMeter), mean_logits averages their logs.
_C.TEST.ENSEMBLE_METHOD = "sum_softmax"
# Which split file is tested: "test" (test.csv) or "val" (val.csv).
_C.TEST.SPLIT = "test"
# torch.compile the model for the test (classification and re-ID), validation during training,
# tools/predict.py and tools/extract_features.py: forward passes of TEST.BATCH_SIZE clips run
# through one compiled graph (a shorter pass is padded with zero clips, whose outputs are
# dropped). The first pass compiles (79 s for I3D-R50-NL on a 2-core CPU; the test then runs
# 1.5x faster, so it pays from about 100 clips: benchmarks/multiview_compile.py). If compiling
# fails, the log says why and inference goes on in eager mode.
_C.TEST.COMPILE = False
# torch.compile backend for TEST.COMPILE: "inductor", "aot_eager" or "eager" (as TRAIN.COMPILE_BACKEND).
_C.TEST.COMPILE_BACKEND = "inductor"

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Folder holding train.csv, val.csv and test.csv (lines "path label", space separated).
_C.DATA.PATH_TO_DATA_DIR = ""
# Prefix joined to every video path in the CSV files (empty: paths are used as they are, and
# relative paths are taken relative to PATH_TO_DATA_DIR).
_C.DATA.PATH_PREFIX = ""
# Separator between path and label in the CSV files.
_C.DATA.PATH_LABEL_SEPARATOR = " "
# Frames per clip (T).
_C.DATA.NUM_FRAMES = 8
# Stride between sampled frames, in decoded frames.
_C.DATA.SAMPLING_RATE = 8
# What to do when a clip runs past the last frame: "pad" (repeat the last frame) or "loop"
# (start again from the first frame).
_C.DATA.SHORT_VIDEO_MODE = "pad"
# Training: the short side is resized to a random value in [MIN, MAX] (scale jitter).
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Training crop size (square, pixels).
_C.DATA.TRAIN_CROP_SIZE = 224
# Test: the short side is resized to this size and crops of this size are taken.
_C.DATA.TEST_CROP_SIZE = 256
# Random horizontal flip in training. Turn off when left/right motion defines the class.
_C.DATA.RANDOM_FLIP = True
# Per-channel mean (RGB, on the 0-1 scale) subtracted after scaling frames to [0, 1].
_C.DATA.MEAN = [0.45, 0.45, 0.45]
# Per-channel standard deviation (RGB) the frames are divided by.
_C.DATA.STD = [0.225, 0.225, 0.225]
# Input channels of the model (3 for RGB).
_C.DATA.INPUT_CHANNEL_NUM = 3
# Video decoder: "auto" (decord when it is installed, else PyAV; the run's log says which),
# "decord" (fast random access; PyAV is used automatically for a file decord cannot read; needs
# pip install 'vidnl[decord]', wheels for Linux and Windows on x86_64) or "pyav".
_C.DATA.DECODING_BACKEND = "auto"
# Decoder threads per video (0: decoder's choice).
_C.DATA.DECODING_THREADS = 1
# Test protocol, data side (docs/pretrained.md has the table of every piece and the keys).
# Temporal sampling: "vidnl" (clips of NUM_FRAMES frames SAMPLING_RATE frames apart; test clips
# spread from the first to the last frame) or "pyslowfast" (PySlowFast's decoder: a clip spans
# NUM_FRAMES x SAMPLING_RATE / TARGET_FPS seconds, i.e. x fps/TARGET_FPS frames of the file, its
# frames floor(linspace(...)) as PySlowFast's PyAV backend reads them; test clip i starts at
# (N - size) * i / NUM_ENSEMBLE_VIEWS, a training clip uniformly in [0, N - size]). "pyslowfast"
# needs the video's frame rate: video files only, not frame folders.
_C.DATA.TEMPORAL_SAMPLING = "vidnl"
# Frame rate the sampling rate refers to with TEMPORAL_SAMPLING "pyslowfast" (PySlowFast's
# DATA.TARGET_FPS, 30 in its configs); must be 0 with "vidnl".
_C.DATA.TARGET_FPS = 0.0
# Resize / crop rounding: "vidnl" (long side rounded to the nearest pixel, antialiased resize,
# centre crop at floor((L - crop) / 2), test frames decoded at TEST_CROP_SIZE) or "pyslowfast"
# (its transform.py: long side floored, bilinear without antialiasing from the full-size decode,
# centre crop at ceil((L - crop) / 2), training crop offsets in [0, L - crop)).
_C.DATA.SPATIAL_ROUNDING = "vidnl"

# ---------------------------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------------------------
_C.DATA_LOADER = CfgNode()
# Worker processes per data loader (0: load in the main process).
_C.DATA_LOADER.NUM_WORKERS = 2
# Pin host memory for faster GPU copies.
_C.DATA_LOADER.PIN_MEMORY = True
# How many other samples a training item tries when its video cannot be decoded.
_C.DATA_LOADER.NUM_RETRIES = 10
# Stop training with an error when more than this fraction of the training videos cannot be
# decoded (a broken dataset, not a few bad files).
_C.DATA_LOADER.MAX_BAD_FRACTION = 0.1

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# What to train and test: "classification" (action recognition, images) or "reid" (video person
# re-identification: embedding + triplet loss, CMC/mAP evaluation).
_C.MODEL.TASK = "classification"
# Architecture: "c2d" (2D kernels, temporal pooling only), "i3d" (inflated 3x1x1 / 3x3x3
# temporal kernels in alternate residual blocks and a 5x7x7 stem, Wang et al. 2018 (NL), Table 1),
# "resnet3d" (Hara et al.'s 3D-ResNet / ResNeXt, kxkxk kernels), "p3d" (Pseudo-3D ResNet),
# "mars" (RGB ResNeXt with a flow teacher), "vtn" (Kozlov et al. 2019's Video Transformer Network:
# a torchvision 2D ResNet per frame + post-norm self-attention decoder), "vtn_vit" (vidnl's ViT-style
# encoder with a classification token over C2D-ResNet features), "resnet2d" and
# "preresnet", "preresnet_snl_code" (images as T=1 clips), plus models registered by other modules (e.g. "resnet50tp").
_C.MODEL.ARCH = "i3d"
# Number of classes of the classifier.
_C.MODEL.NUM_CLASSES = 400
# Dropout rate before the classifier.
_C.MODEL.DROPOUT_RATE = 0.5
# Classifier head at test time (training always pools globally): "global" (average over T x H x W,
# then the linear layer) or "fully_conv" (PySlowFast's eval head: an average pool of the training
# clip's final feature size, e.g. 4x7x7 for 8x224^2, stride 1, the linear layer and a softmax at
# each position, the probabilities averaged; the model outputs their log, so TEST.ENSEMBLE_METHOD
# sum_softmax sums the head's probabilities as PySlowFast's TestMeter does). c2d, i3d, resnet2d,
# resnet3d, p3d, mars; classification only (docs/pretrained.md, "Test head").
_C.MODEL.TEST_HEAD = "global"
# Training loss: "cross_entropy".
_C.MODEL.LOSS_FUNC = "cross_entropy"
# Label smoothing of the cross-entropy loss (0: none).
_C.MODEL.LABEL_SMOOTHING = 0.0
# Layout of TRAIN/TEST.CHECKPOINT_FILE_PATH weights: "auto" (detected from the key names), "vidnl",
# "torchvision" (2D ResNets, inflated to 3D), "pyslowfast" (.pyth), "caffe2" (the video-nonlocal-net
# .pkl release), "pytorchvideo" (hub .pyth), "mmaction2", "snl_official", "cgnl_official"
# (docs/pretrained.md).
_C.MODEL.WEIGHTS_FORMAT = "auto"
# How 2D kernels are inflated over time: "mean" (each of the t planes is w / t, as in Wang et al. 2018) or
# "center" (w in the middle plane, zeros elsewhere).
_C.MODEL.INFLATE = "mean"
# MARS: weight alpha of the feature-distillation term (MSE to the flow teacher's features).
_C.MODEL.MARS_ALPHA = 50.0
# MARS: checkpoint of the trained flow stream (the frozen teacher); empty: random (tests only).
_C.MODEL.MARS_FLOW_CHECKPOINT = ""

# ---------------------------------------------------------------------------------------------
# ResNet backbone
# ---------------------------------------------------------------------------------------------
_C.RESNET = CfgNode()
# Depth: 18 (basic blocks) or 50 / 101 (bottleneck blocks).
_C.RESNET.DEPTH = 50
# Channels of the stem; stage widths are 1x, 2x, 4x, 8x this (times 4 at the output of
# bottleneck blocks). 64 is the standard ResNet; small values give tiny models for tests.
_C.RESNET.BASE_WIDTH = 64
# Groups of the 3x3x3 convs of "resnet3d" / "mars" bottlenecks: 1 for ResNet, 32 for ResNeXt.
_C.RESNET.CARDINALITY = 1
# Temporal layout of C2D / I3D ResNets (docs/pretrained.md has the presets). The defaults are
# the released 8x8 models (PySlowFast I3D_NLN_8x8_R50, pytorchvideo i3d_r50); Table 1 of Wang et al. 2018
# (32-frame input) is STEM_TEMPORAL_STRIDE 2, POOL1_TEMPORAL [3, 2], POOL2_TEMPORAL [3, 2, 1]
# (configs/Kinetics/*_32x2_*.yaml).
# Temporal kernel of the t x 7 x 7 stem conv; 0: 5 for i3d, 1 for c2d.
_C.RESNET.STEM_TEMPORAL_KERNEL = 0
# Temporal stride of the stem conv.
_C.RESNET.STEM_TEMPORAL_STRIDE = 1
# [kernel, stride] in time of the stem max-pool (3x3 with stride 2 in space).
_C.RESNET.POOL1_TEMPORAL = [1, 1]
# [kernel, stride, padding] of the temporal max-pool after res2; [] for none.
_C.RESNET.POOL2_TEMPORAL = [2, 2, 0]
# False removes the temporal max-pool after res2 (also for p3d).
_C.RESNET.TEMPORAL_POOL = True
# I3D only: per stage, 1 where a residual block gets a temporal kernel. Empty: the released
# pattern (every block of res2; every other block of res3 and res4 from block 0, of res5 from
# block 1).
_C.RESNET.INFLATE = []
# Which conv of an inflated bottleneck gets the temporal kernel: "1x1" (3x1x1, I3D 3x1x1 of
# Wang et al. 2018 (NL), the released models) or "3x3" (3x3x3, their I3D 3x3x3 of Table 2e).
_C.RESNET.INFLATE_CONV = "1x1"
# resnet3d: shortcut where the shape changes, "B" (1x1x1 conv + BN) or "A" (subsample, zero-pad the
# new channels; no parameters: Hara et al.'s v1 ResNet-18/34 Kinetics checkpoints).
_C.RESNET.SHORTCUT = "B"
# Zero-initialise the last BN of each residual block (the block starts as identity).
_C.RESNET.ZERO_INIT_FINAL_BN = True

# ---------------------------------------------------------------------------------------------
# Video transformers: MODEL.ARCH vtn (Kozlov et al. 2019, vidnl/models/vtn.py) and vtn_vit
# (ViT-style encoder with a classification token, vidnl/models/vtn_vit.py)
# ---------------------------------------------------------------------------------------------
_C.VTN = CfgNode()
# Self-attention of the temporal encoder: "mha" (multi-head attention) or a nonlocal block type
# over the frames. vtn: any NONLOCAL.TYPE value ("snl": Zhu et al. 2021 (SNL) Appendix C.1, "nl",
# "ns", "gsnl", "a2", "cgnl", "cc"), configured by NONLOCAL.* (INNER_RATIO, KERNEL, STYLE, ...); it
# takes the place of each multi-head attention inside the same post-norm decoder:
# LN(x + Dropout(block(x) - x)), the frames as a B x D x T x 1 x 1 graph (docs/nonlocal.md, "VTN").
# vtn_vit: "mha", "snl" or "nl".
_C.VTN.ATTENTION = "mha"
# Token width (vtn: the decoder width; a 1x1 conv maps the ResNet's features to it when they differ).
_C.VTN.DIM = 512
# Encoder (vtn: decoder) layers: 4 in Kozlov et al. 2019; vtn_vit's configs use 3.
_C.VTN.NUM_LAYERS = 4
# Attention heads ("mha").
_C.VTN.NUM_HEADS = 8
# vtn_vit: longest clip (frames) the positional embedding covers (vtn's position table has
# DATA.NUM_FRAMES rows, as the official code's).
_C.VTN.MAX_FRAMES = 64

# ---------------------------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------------------------
_C.BN = CfgNode()
# BN epsilon.
_C.BN.EPSILON = 1e-5
# BN momentum (PyTorch convention).
_C.BN.MOMENTUM = 0.1
# "auto": with W > 1 torchrun processes, training BN statistics over the whole global batch
# (nn.SyncBatchNorm on GPU, vidnl's all-reduce GlobalBatchNorm on the CPU), so W processes train
# as one; with one process plain BN. "sync_batchnorm": the same, said explicitly. "batchnorm":
# statistics of each process's own share (faster on many GPUs; W processes then differ from one).
_C.BN.NORM_TYPE = "auto"
# Keep BN layers in eval mode during training (running statistics, trainable scale and shift), as
# when fine-tuning with small per-process batches; makes N processes match one exactly on CPU.
_C.BN.FROZEN = False
# Apply weight decay to BN and bias parameters too (False: they get no weight decay).
_C.BN.WEIGHT_DECAY_ON_BN = False

# ---------------------------------------------------------------------------------------------
# Nonlocal blocks
# ---------------------------------------------------------------------------------------------
_C.NONLOCAL = CfgNode()
# Per stage (res2..res5), 0-based indices of the residual blocks after which a nonlocal block is
# inserted. [[], [1, 3], [1, 3, 5], []] is the 5-block R50 of Wang et al. 2018 (NL). [] everywhere: none.
_C.NONLOCAL.LOCATION = [[], [], [], []]
# Block type: "nl" (Wang et al. 2018), "ns" (nonlocal stage), "a2" (double attention),
# "cgnl" (compact generalised NL, Yue et al. 2018), "cc" (criss-cross), "snl" (spectral NL, Zhu et al.
# 2021, Eq. 5) or "gsnl" (SNL with the K-term Chebyshev filter). See vidnl/nonlocal_blocks/blocks.py.
_C.NONLOCAL.TYPE = "snl"
# Pairwise kernel: "" (the type's default), "embedded_gaussian", "gaussian", "dot", "relu_dot",
# "concatenation" (nl/ns/snl/gsnl), or "dot" / "embedded_gaussian" / "gaussian" (cgnl).
_C.NONLOCAL.KERNEL = ""
# Affinity normalisation: "" (the type's default), "softmax", "mean" (1/N), "random_walk" (D^-1),
# "symmetric" (D^-1/2 sym D^-1/2) or "none" (nl/ns/snl/gsnl).
_C.NONLOCAL.NORM = ""
# Inner width Cs in channels (0: INNER_RATIO times the input channels).
_C.NONLOCAL.INNER_CHANNELS = 0
# Inner width Cs as a fraction of the input channels (0.5: Cs = C/2 as in the papers).
_C.NONLOCAL.INNER_RATIO = 0.5
# Max-pool kernel (T, H, W) applied to phi and g to subsample the graph; [] or [1, 1, 1]: none.
# [1, 2, 2] is the spatial subsampling of Wang et al. 2018 (NL).
_C.NONLOCAL.POOL = []
# Which positions form the graph: "spacetime" (all T*H*W positions), "space" (one graph per
# frame) or "time" (one graph per pixel across frames).
_C.NONLOCAL.MODE = "spacetime"
# Computation: "fast" (factored O(N) forms, fused attention, chunked or axis-wise forms),
# "dense" (builds the N x N affinity; the reference form) or "auto" (the cheaper one per call).
_C.NONLOCAL.IMPLEMENTATION = "auto"
# gsnl: number K of Chebyshev terms (0: 3). cgnl: Taylor expansion order P (0: 3).
_C.NONLOCAL.ORDER = 0
# cgnl: number of channel groups.
_C.NONLOCAL.GROUPS = 1
# cc: how many times the criss-cross attention is applied (shared weights).
_C.NONLOCAL.RECURRENCE = 2
# ns: number of diffusion stages sharing one affinity.
_C.NONLOCAL.NS_STAGES = 1
# a2: number of global descriptors (0: the inner width Cs).
_C.NONLOCAL.NUM_DESCRIPTORS = 0
# Where the papers' text and their released code differ (docs/nonlocal.md, "Paper and official
# forms"): "paper" (the formulas as written) or "official" (nl: the Caffe2 release / PySlowFast /
# pytorchvideo; snl, gsnl: the official SNL code; cgnl: the official CGNL code). The keys below
# override single options of the style; None / "" / 0 leave them to the style.
_C.NONLOCAL.STYLE = "paper"
# Biases on the 1x1x1 projections (None: the style's; official NL: True).
_C.NONLOCAL.BIAS = None
# Scale the softmax logits by Cs^-1/2 (exp kernels; None: the style's; official NL: True).
_C.NONLOCAL.SOFTMAX_SCALE = None
# Where POOL subsamples: "projection" (max-pool phi(x) and g(x), the text of Wang et al. 2018) or "input"
# (max-pool x before phi and g, the released NL code); "": the style's.
_C.NONLOCAL.POOL_AT = ""
# Max-pool with ceil_mode (odd sizes keep their last row; None: the style's, paper True).
_C.NONLOCAL.POOL_CEIL_MODE = None
# snl / gsnl: activation after the output BN, "none" (Zhu et al. 2021, Eq. 5) or "relu" (the official
# SNL code); "": the style's.
_C.NONLOCAL.OUTPUT_ACTIVATION = ""
# snl / gsnl: 1 filters with A, -1 with -A (the MMSeg variant of the official code: Z W1 - A Z W2);
# 0: the style's (1).
_C.NONLOCAL.A_SIGN = 0
# cgnl: gamma of the Gaussian RBF kernel (0: the style's, 1e-4 as in Yue et al. 2018).
_C.NONLOCAL.CGNL_GAMMA = 0.0
# cgnl: beta of the RBF Taylor form, "exact" (exp(-gamma (a^2 + b^2)) per pair) or "constant"
# (exp(-2 gamma), the constant of Yue et al. 2018, the official code); "": the style's.
_C.NONLOCAL.CGNL_BETA = ""
# cgnl: output normalisation, "batch" (BN, Yue et al. 2018, Eq. 13) or "group" (GroupNorm with GROUPS
# groups, the official code); "": the style's.
_C.NONLOCAL.CGNL_NORM = ""
# Zero-initialise the scale of the block's output BN so the block starts as the identity.
_C.NONLOCAL.ZERO_INIT_FINAL_BN = True

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
# Optimizer: "sgd", "adam" or "adamw".
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
# Base learning rate (for TRAIN.BATCH_SIZE clips per step).
_C.SOLVER.BASE_LR = 0.1
# Learning-rate policy: "cosine", "steps_with_relative_lrs", "constant" or "plateau" (BASE_LR,
# multiplied by PLATEAU_FACTOR whenever the validation metric stops improving; PLATEAU_* below).
_C.SOLVER.LR_POLICY = "cosine"
# Cosine: final learning rate at MAX_EPOCH.
_C.SOLVER.COSINE_END_LR = 0.0
# Steps policy: epochs where a new stage starts (the first entry must be 0).
_C.SOLVER.STEPS = [0]
# Steps policy: learning rate of each stage relative to BASE_LR (same length as STEPS).
_C.SOLVER.LRS = [1.0]
# Number of training epochs.
_C.SOLVER.MAX_EPOCH = 100
# Momentum (SGD) or beta1 (Adam/AdamW).
_C.SOLVER.MOMENTUM = 0.9
# Nesterov momentum for SGD.
_C.SOLVER.NESTEROV = True
# Weight decay.
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Linear warm-up length in epochs (0: none).
_C.SOLVER.WARMUP_EPOCHS = 0.0
# Learning rate at the start of the warm-up.
_C.SOLVER.WARMUP_START_LR = 0.01
# Plateau policy (Kozlov et al.'s VTN recipe, torch's ReduceLROnPlateau rules): the lr is BASE_LR
# (after the warm-up) until more than PLATEAU_PATIENCE validations in a row fail to improve the
# validation metric (mode max: top-1 % for classification, rank-1 % for re-ID), then it is
# multiplied by PLATEAU_FACTOR (never below PLATEAU_MIN_LR), the count restarts and the next
# PLATEAU_COOLDOWN validations are not counted. It steps once per periodic validation (every
# TRAIN.EVAL_PERIOD epochs, which must be > 0; patience counts validations, not epochs) and its
# state is saved in the checkpoints, so a resumed run continues exactly. The defaults are the
# official VTN code's (ReduceLROnPlateau(mode="max", factor=0.1, patience=10, threshold=0.01,
# threshold_mode="abs", cooldown=0) stepped after every epoch's validation on the val accuracy as
# a fraction): its 0.01 is our 1.0, as our metric is in percent.
_C.SOLVER.PLATEAU_FACTOR = 0.1
# Plateau: validations without improvement tolerated before the lr drops (reduced on the next).
_C.SOLVER.PLATEAU_PATIENCE = 10
# Plateau: an improvement must exceed best + THRESHOLD ("abs", metric units: percentage points)
# or best * (1 + THRESHOLD) ("rel").
_C.SOLVER.PLATEAU_THRESHOLD = 1.0
# Plateau: "abs" or "rel" (see PLATEAU_THRESHOLD).
_C.SOLVER.PLATEAU_THRESHOLD_MODE = "abs"
# Plateau: validations after a reduction during which no bad validation is counted.
_C.SOLVER.PLATEAU_COOLDOWN = 0
# Plateau: the lr never goes below this.
_C.SOLVER.PLATEAU_MIN_LR = 0.0

# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------
_C.TENSORBOARD = CfgNode()
# Write TensorBoard events to OUTPUT_DIR/tensorboard.
_C.TENSORBOARD.ENABLE = True

# Keys of other areas, each in its own module with its comments and rules.
from . import defaults_data, defaults_reid  # noqa: E402

defaults_data.add_config(_C)
defaults_reid.add_config(_C)


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
