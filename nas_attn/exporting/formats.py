"""ONNX and TorchScript copies of an exported model, each checked against torch.

Both are traced (`torch.jit.trace`; ONNX through torch.onnx's TorchScript-based exporter,
`dynamo=False`, opset `ONNX_OPSET`). While tracing, the model code computes every size that
depends on the input (the attention modules' token grids under their budget `max_tokens`, the
pooling and interpolation matrices, the decoder's resizing to the skip's size) with tensor
operations on the traced sizes (`nas_attn.models.tokens`), and the token grid's loops run as a
scripted function, so the graph follows the input's size (ONNX `Loop`): any batch and spatial size
gives the numbers eager torch gives. `export_onnx` writes `model.onnx` with dynamic batch and
spatial axes; `export_torchscript` writes `model.ts`. Each is checked against the eager model at
three input sizes (`check_sizes`: the export size, 2**depth on every axis, the next odd multiples
of 2**depth above the export size with one axis not a multiple). Both write to a temporary name
and rename (`nas_attn.atomic`).
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Sequence

from ..architecture.description import UNetArch
from ..atomic import atomic_save, is_disk_full
from .text import ExportError

ONNX_OPSET = 17
CHECK_ATOL = 1e-4
FORMATS = ("onnx", "torchscript")


def example_inputs(arch: UNetArch, size: Sequence[int]):
    import torch

    x = torch.randn(1, arch.in_channels, *size)
    if arch.aux_channels:
        return x, torch.randn(1, arch.aux_channels, *size)
    return (x,)


class OnnxUnsupportedError(ExportError):
    """An architecture whose attention modules cannot be exported to ONNX with dynamic axes."""


def onnx_missing() -> str | None:
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"ONNX export needs {', '.join(missing)} (onnx to write the model, onnxruntime for "
            "the check against torch): pip install 'nas-attn[onnx]'")


def check_sizes(size: Sequence[int], depth: int) -> list[tuple[int, ...]]:
    """The input sizes an export is checked at: `size` itself, 2**depth on every axis (the
    smallest map the model takes whole), and the next odd multiple of 2**depth above `size` on
    every axis, plus 1 on the first (not a multiple at all)."""
    m = 2 ** depth
    larger = [(s // m + (1 if (s // m) % 2 == 0 else 2)) * m for s in size]
    larger[0] += 1
    return [tuple(int(s) for s in size), tuple(m for _ in size), tuple(larger)]


def _batch2(inputs):
    # a batch of 1 would let the tracer treat the batch axis as a constant
    return [x.repeat(2, *[1] * (x.dim() - 1)) if x.shape[0] == 1 else x for x in inputs]


def _compare(run, model, inputs, sizes, what: str) -> float:
    """Largest |run(xs) - model(xs)| over inputs of each of `sizes` (batch 3); raises naming
    the size where they disagree."""
    import numpy as np
    import torch

    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        xs = [torch.randn(3, x.shape[1], *size, generator=gen) for x in inputs]
        with torch.no_grad():
            want = model(*xs)
            want = (want[0] if isinstance(want, (list, tuple)) else want).numpy()
        got = np.asarray(run(xs))
        if got.shape != want.shape:
            raise ExportError(f"{what}'s output at input size {tuple(size)} has shape "
                              f"{got.shape}, torch's {want.shape}")
        diff = float(np.abs(got - want).max())
        if not diff <= CHECK_ATOL:
            raise ExportError(f"{what}'s output at input size {tuple(size)} differs from "
                              f"torch's by {diff:.3g} (> {CHECK_ATOL:g})")
        worst = max(worst, diff)
    return worst


def _onnx_save(model, inputs, path) -> None:
    import torch

    spatial = inputs[0].dim() - 2
    axes = {0: "batch", **{2 + i: f"size{i}" for i in range(spatial)}}
    names = ["image", "aux"][: len(inputs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, the exporter's deprecation notice
        torch.onnx.export(model, tuple(inputs), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=names, output_names=["logits"],
                          dynamic_axes={**{n: axes for n in names}, "logits": axes})


def _onnx_check(model, path: Path, inputs, sizes) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # not its warnings about renaming inputs of Loop bodies
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return _compare(lambda xs: sess.run(None, dict(zip(names, [x.numpy() for x in xs])))[0],
                    model, inputs, sizes, "onnxruntime")


def _onnx_culprits(arch: UNetArch) -> list[str]:
    """The attention modules of `arch` that do not export to ONNX (each alone in a small UNet
    of depth 2, checked at three sizes beyond their token budgets)."""
    import tempfile

    import torch

    from ..architecture import registry
    from ..architecture.builder import build_unet

    bad = []
    for name in arch.attention_names():
        spec = next(s for _, s in arch.sites() if s.name == name)
        site = "skip" if registry.get_info(name).kind == "paired" else "encoder"
        small = UNetArch(spatial_dims=arch.spatial_dims, depth=2, widths=(4, 8, 8),
                         **{site: (spec, None)})
        model = build_unet(small).eval()
        inputs = [torch.randn(2, 1, *(8,) * arch.spatial_dims)]
        with tempfile.TemporaryDirectory() as tmp:
            try:
                _onnx_save(model, inputs, Path(tmp) / "m.onnx")
                _onnx_check(model, Path(tmp) / "m.onnx", inputs,
                            check_sizes((8,) * arch.spatial_dims, 2))
            except Exception:  # noqa: BLE001  (any failure marks the module)
                bad.append(name)
    return bad


def export_onnx(model, inputs, path: Path, arch: UNetArch | None = None) -> dict:
    """model.onnx with dynamic batch and spatial axes, checked with onnxruntime against torch
    at `check_sizes` (max |difference| <= CHECK_ATOL). Returns the check."""
    problem = onnx_missing()
    if problem:
        raise ExportError(problem)
    depth = len(arch.widths) - 1 if arch is not None else 0
    sizes = check_sizes(tuple(inputs[0].shape[2:]), depth)
    inputs = _batch2(inputs)
    result: dict = {}

    def save(tmp: Path):
        try:
            _onnx_save(model, inputs, tmp)
            result["max_abs_diff"] = _onnx_check(model, tmp, inputs, sizes)
        except Exception as e:  # noqa: BLE001  (exporter / onnxruntime failures)
            if is_disk_full(e):
                raise
            bad = _onnx_culprits(arch) if arch is not None else []
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            if bad:
                raise OnnxUnsupportedError(
                    f"cannot export to ONNX (opset {ONNX_OPSET}): attention module"
                    f"{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad)} "
                    f"failed ({first}); use model.py (any size) or an architecture without "
                    "them") from None
            raise ExportError(f"ONNX export failed (opset {ONNX_OPSET}): {first}") from None
        result["sizes"] = [list(s) for s in sizes]

    atomic_save(path, save)
    return result


def export_torchscript(model, inputs, path: Path, depth: int = 0) -> dict:
    """model.ts, traced: it takes any batch and spatial size (checked at `check_sizes`)."""
    import torch

    sizes = check_sizes(tuple(inputs[0].shape[2:]), depth)
    inputs = _batch2(inputs)
    result: dict = {}

    def save(tmp: Path):
        with warnings.catch_warnings():
            # TracerWarnings about shape-dependent branches; FutureWarning: torch.jit is deprecated
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, tuple(inputs), check_trace=False)

            def run(xs):
                with torch.no_grad():
                    out = traced(*xs)
                return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

            try:
                result["max_abs_diff"] = _compare(run, model, inputs, sizes,
                                                  "the TorchScript model")
            except ExportError as e:
                raise ExportError(f"traced TorchScript: {e}") from None
            with open(tmp, "wb") as f:  # to a path, a full disk aborts the process
                torch.jit.save(traced, f)
        result["sizes"] = [list(s) for s in sizes]

    atomic_save(path, save)
    return result
