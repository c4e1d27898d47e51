"""Export a vidnl model, nonlocal blocks included, to ``torch.export`` (.pt2) or ONNX.

Both formats come from one ``torch.export.export(..., strict=True)`` trace of the model in eval
mode on the CPU, with the batch axis dynamic: the .pt2 file is that ExportedProgram, and the
ONNX file is its translation by the dynamo-based ``torch.onnx.export`` (docs/export.md says why
not the TorchScript exporter). Strict (TorchDynamo) tracing is needed because the nonlocal blocks
take their size decisions from ``tensor.shape[...].numel()``, which the non-strict tracer turns
into a fixed batch size.

Two adjustments, both logged, keep the export exact and batch-independent:

* softmax affinities (NL / NS with the embedded Gaussian or Gaussian kernel) are computed in
  eager mode either with the explicit N×M matrix or with fused ``scaled_dot_product_attention``,
  chosen per call from the batch size (``functional.softmax_is_explicit``); the exported graph
  must hold one form for every batch, so it is the fused one (the same values);
* ``a @ w`` with a 1-D ``w`` (the concatenation kernel of NL) is written to ONNX as
  ``Squeeze(MatMul(a, Unsqueeze(w)))``: ONNX Runtime's Transpose+MatMul fusion (graph
  optimisation level "extended" and above, the default) computes the 1-D form wrongly
  (measured with onnxruntime 1.32: errors of 0.1 on outputs of size 3).

Every other form, fast or dense, exports as it runs in eager mode; ``implementation: auto``
resolves with the CPU cost model (``functional.fast_is_cheaper``), which does not depend on the
batch size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import torch
import torch.nn as nn

from .errors import VidnlUserError

logger = logging.getLogger(__name__)

FORMATS = ("torch_export", "onnx")
INPUT_NAME, OUTPUT_NAME, BATCH_AXIS = "input", "output", "batch"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
EXTENSIONS = {"torch_export": ".pt2", "onnx": ".onnx"}


class ExportError(VidnlUserError, RuntimeError):
    """The model cannot be exported as asked; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------
# From a config: the model with its weights and an example input
# ------------------------------------------------------------------------------------------------
def example_input(cfg, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random float32 input at the config's test size, ``batch``×C×T×H×W: re-ID clips of
    REID.SEQ_LEN frames of REID.HEIGHT×REID.WIDTH (3 channels), image models (an image dataset
    or an image architecture) one frame of DATA.TEST_CROP_SIZE², video models DATA.NUM_FRAMES
    frames of DATA.TEST_CROP_SIZE² with DATA.INPUT_CHANNEL_NUM channels. The model takes
    normalised inputs (DATA.MEAN / DATA.STD applied), as in vidnl.data.model_input; the
    values are standard normal, from ``seed`` (the shape is ``vidnl.models.build.model_input``'s)."""
    from .models.build import model_input

    return torch.randn((batch,) + model_input(cfg)[1], generator=torch.Generator().manual_seed(seed))


def check_output_path(path: str, fmt: str) -> None:
    """ExportError unless ``path`` can be the file of format ``fmt``: it ends in the format's
    extension (.pt2 / .onnx), is not a folder, and no file stands where its folders go."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    path = os.fspath(path)
    ext = EXTENSIONS[fmt]
    if os.path.isdir(path):
        raise ExportError(f"output {path} is a folder; expected the path of the {fmt} file to write, e.g. "
                          f"{os.path.join(path, 'model' + ext)}")
    if fmt == "torch_export" and not path.endswith(ext):
        raise ExportError(f"{path}: a torch.export file must end in .pt2 (torch.export.load reads only those)")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # the nearest existing folder above it (the root exists)
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ExportError(f"output {path}: {folder} is a file, not a folder; expected the path of the {fmt} file "
                          f"to write")


def build_export_model(cfg, weights: str) -> nn.Module:
    """build_model(cfg) with the weights of the file ``weights`` loaded as the test does
    (MODEL.WEIGHTS_FORMAT, MODEL.INFLATE; strict), in eval mode on the CPU. A re-ID model's
    classifier size (training identities, not in the config) is read from the file: the
    exported re-ID model returns embeddings and never uses it."""
    from .models.weights import CheckpointError, extract_model_state, load_checkpoint_file, load_weights
    from .models import build_model

    if os.path.isdir(weights):
        raise CheckpointError(f"weights: {weights} is a folder; expected a checkpoint file (.pyth, .pt, .pkl, ...)")
    ckpt = load_checkpoint_file(weights)  # CheckpointError (a user error) names a missing / bad file
    if cfg.MODEL.TASK == "reid":
        classifier = extract_model_state(ckpt, weights).get("classifier.weight")
        if classifier is not None and classifier.shape[0] != cfg.MODEL.NUM_CLASSES:
            logger.info("re-ID classifier of %s has %d identities: MODEL.NUM_CLASSES set to %d (embeddings are "
                        "exported, not the classifier)", weights, classifier.shape[0], classifier.shape[0])
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.NUM_CLASSES = int(classifier.shape[0])
            cfg.freeze()
    model = build_model(cfg)
    load_weights(model, weights, ckpt=ckpt, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    return model.eval().cpu()


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
def nonlocal_summary(model: nn.Module) -> list[str]:
    """One line per nonlocal block: its name, type and options that decide the exported form."""
    from .nonlocal_blocks import NonLocalBase

    lines = []
    for name, m in model.named_modules():
        if isinstance(m, NonLocalBase):
            opts = [f"implementation={m.implementation}", f"mode={m.mode}", f"pool={m.pool_kernel}"]
            for attr in ("kernel", "norm", "order"):
                if hasattr(m, attr):
                    opts.append(f"{attr}={getattr(m, attr)}")
            lines.append(f"{name}: {type(m).__name__} ({', '.join(opts)})")
    return lines


@contextlib.contextmanager
def batch_independent_forms(model: nn.Module) -> Iterator[None]:
    """While tracing, compute every softmax affinity with fused attention whatever the batch
    size (eager mode switches from the explicit N×M matrix to fused attention above a number of
    scores that grows with the batch; both are exact). Logs the blocks concerned."""
    from .nonlocal_blocks import NonLocalBase, functional as NF

    softmax_blocks = [n for n, m in model.named_modules() if isinstance(m, NonLocalBase)
                      and getattr(m, "norm", None) == "softmax" and m.implementation != "dense"]
    for name in softmax_blocks:
        logger.info("export: %s: softmax affinity exported in its fused scaled_dot_product_attention form for "
                    "every batch size (eager mode uses the explicit N×M matrix on small batches; same values)", name)
    saved = NF.SOFTMAX_EXPLICIT_MAX_SCORES
    NF.SOFTMAX_EXPLICIT_MAX_SCORES = -1
    try:
        yield
    finally:
        NF.SOFTMAX_EXPLICIT_MAX_SCORES = saved


def export_program(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """torch.export (strict) of ``model`` in eval mode for inputs like ``example`` (B×C×T×H×W,
    B ≥ 2 when the batch axis is dynamic: size 1 would be fixed by the tracer)."""
    model = model.eval()
    if dynamic_batch and example.shape[0] < 2:
        raise ValueError(f"a dynamic batch needs an example batch of at least 2, got {tuple(example.shape)}")
    dynamic_shapes = ({0: torch.export.Dim(BATCH_AXIS, min=1)},) if dynamic_batch else None
    with batch_independent_forms(model), torch.no_grad():
        try:
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes, strict=True)
        except Exception as e:  # a guard on the batch size or an untraceable op: say so without a traceback
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise ExportError(f"torch.export could not trace the model for inputs {tuple(example.shape)}"
                              f"{' with a dynamic batch' if dynamic_batch else ''}: {type(e).__name__}: {first}"
                              ) from e


def _require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs the packages {', '.join(ONNX_PACKAGES)}; missing: {', '.join(missing)}. "
                          f"Install them with: pip install -e '.[export]' (or pip install {' '.join(ONNX_PACKAGES)})")


def _onnx_matmul(a, b):
    """aten.matmul for ONNX, with a 1-D right operand as a K×1 matrix (see the module docstring)."""
    from onnxscript import opset18 as op

    if len(b.shape) == 1:
        axis = op.Constant(value_ints=[-1])
        return op.Squeeze(op.MatMul(a, op.Unsqueeze(b, axis)), axis)
    return op.MatMul(a, b)


def save_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, path: str,
              opset: int | None = None) -> None:
    """Translate ``program`` to ONNX (dynamo exporter) and write one self-contained file; the
    input is named "input", the output "output", a dynamic batch axis "batch"."""
    _require_onnx()
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME], opset_version=opset, verbose=False,
                                     custom_translation_table={torch.ops.aten.matmul.default: _onnx_matmul})
    batch = onnx_program.model.graph.inputs[0].shape[0]
    if not isinstance(batch, int):
        onnx_program.rename_axes({batch: BATCH_AXIS})
    onnx_program.save(path, external_data=False)


def export_model(model: nn.Module, example: torch.Tensor, path: str, fmt: str, dynamic_batch: bool = True,
                 opset: int | None = None) -> torch.export.ExportedProgram:
    """Export ``model`` (eval mode, CPU) for inputs like ``example`` (B×C×T×H×W) to ``path``:
    ``fmt`` "torch_export" writes torch.export.save's .pt2, "onnx" an ONNX file (opset
    ``opset``, None: the exporter's default). Returns the ExportedProgram both come from."""
    check_output_path(path, fmt)
    if fmt == "onnx":
        _require_onnx()
    model = model.eval().cpu()
    example = example.cpu().float()
    for line in nonlocal_summary(model):
        logger.info("export: %s", line)
    program = export_program(model, example, dynamic_batch)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if fmt == "torch_export":
        with open(path, "wb") as f:  # an OSError names the path (torch's own writer raises RuntimeError)
            torch.export.save(program, f)
    else:
        save_onnx(program, example, path, opset)
    logger.info("export: wrote %s (%s, input %s%s)", path, fmt, tuple(example.shape),
                ", dynamic batch" if dynamic_batch else "")
    return program


# ------------------------------------------------------------------------------------------------
# Running an exported file
# ------------------------------------------------------------------------------------------------
def run_exported(path: str, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run the exported file ``path`` on x (B×C×T×H×W) on the CPU: the .pt2 with
    torch.export.load, the ONNX file with ONNX Runtime (default graph optimisations)."""
    if fmt == "torch_export":
        with torch.no_grad():
            return torch.export.load(path).module()(x.cpu())
    if fmt == "onnx":
        _require_onnx()
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})
        return torch.from_numpy(out)
    raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")


def max_abs_diff(model: nn.Module, path: str, fmt: str, x: torch.Tensor) -> float:
    """max |exported(x) − model(x)| over all outputs, the model in eval mode on the CPU."""
    model = model.eval().cpu()
    with torch.no_grad():
        expected = model(x.cpu())
    return float((run_exported(path, fmt, x) - expected).abs().max())
