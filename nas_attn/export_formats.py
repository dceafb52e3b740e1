"""ONNX and TorchScript copies of an exported model, each checked against torch.

`export_onnx`: `model.onnx` with a dynamic batch axis and dynamic spatial axes that are
multiples of 2**depth, checked with onnxruntime against torch at the export size and at a second
size; the attention modules whose sizes are fixed at trace time are named in the error.
`export_torchscript`: `model.ts`, traced at one input size. Both write to a temporary name and
rename (`nas_attn.atomic`).
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Sequence

from .arch import UNetArch
from .atomic import atomic_save, is_disk_full
from .export_text import ExportError

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
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"ONNX export needs {', '.join(missing)} (torch's exporter needs onnx and onnxscript, "
            "the check against torch onnxruntime): pip install 'nas-attn[onnx]'")


def _dynamic_program(model, inputs, multiple: int, other: Sequence[int]):
    """torch.export with a dynamic batch and spatial axes that are multiples of `multiple`
    (2**depth: max pooling with ceil_mode and the decoder's resizing are exact there), run once
    at the `other` spatial size against the eager model (fails fast where a module fixed a size
    at trace time)."""
    import torch

    Dim = torch.export.Dim
    spatial = inputs[0].dim() - 2
    dims = {0: Dim("batch", min=1, max=1024)}
    dims.update({2 + i: multiple * Dim(f"size{i}", min=1, max=4096) for i in range(spatial)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, tuple(inputs), dynamic_shapes=tuple(
            dims for _ in inputs), strict=False)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, x.shape[1], *other, generator=gen) for x in inputs]
    with torch.no_grad():
        want, got = model(*xs), program.module()(*xs)
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4, rtol=1e-3):
        raise ExportError(f"the exported graph disagrees with torch at input size {tuple(other)}")
    return program


def _onnx_check(model, path: Path, inputs, sizes) -> float:
    """Largest |onnxruntime - torch| over inputs of each of `sizes` (batch 2); raises if the
    outputs disagree."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        xs = [torch.randn(2, x.shape[1], *size, generator=gen) for x in inputs]
        with torch.no_grad():
            want = model(*xs).numpy()
        got = sess.run(None, dict(zip(names, [x.numpy() for x in xs])))[0]
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise ExportError(f"onnxruntime's output at input size {tuple(size)} differs from "
                              "torch's")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst



def _onnx_culprits(arch: UNetArch) -> list[str]:
    """The attention modules of `arch` whose shapes do not follow the input in an exported
    graph (each alone in a small UNet of depth 2, at sizes beyond the token budgets)."""
    import torch

    from . import registry
    from .unet import build_unet

    bad = []
    size, other = ((32, 32), (24, 40)) if arch.spatial_dims == 2 else ((8, 8, 8), (12, 8, 16))
    for name in arch.attention_names():
        spec = next(s for _, s in arch.sites() if s.name == name)
        site = "skip" if registry.get_info(name).kind == "paired" else "encoder"
        small = UNetArch(spatial_dims=arch.spatial_dims, depth=2, widths=(4, 8, 8),
                         **{site: (spec, None)})
        model = build_unet(small).eval()
        try:
            _dynamic_program(model, [torch.randn(2, 1, *size)], 4, other)
        except Exception:  # noqa: BLE001  (any failure marks the module)
            bad.append(name)
    return bad


def export_onnx(model, inputs, path: Path, arch: UNetArch | None = None) -> dict:
    """model.onnx with dynamic batch and spatial axes (multiples of 2**depth), checked with
    onnxruntime against torch at the export size and at another size. Returns the check."""
    problem = onnx_missing()
    if problem:
        raise ExportError(problem)
    depth = len(arch.widths) - 1 if arch is not None else 0
    multiple = 2 ** depth
    size = tuple(inputs[0].shape[2:])
    if any(s % multiple for s in size):
        raise ExportError(f"ONNX input size {size} must be a multiple of 2**depth = {multiple} "
                          "on every axis")
    other = tuple(s + multiple * (k + 1) for k, s in enumerate(size))
    inputs = [x.repeat(2, *[1] * (x.dim() - 1)) if x.shape[0] == 1 else x for x in inputs]
    result: dict = {}  # (a batch of 1 would fix the batch axis at 1)

    def save(tmp: Path):
        try:
            import torch

            program = _dynamic_program(model, inputs, multiple, other)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(program, tuple(inputs), str(tmp), dynamo=True,
                                  input_names=["image", "aux"][: len(inputs)],
                                  output_names=["logits"], verbose=False,
                                  external_data=False)  # one file (weights inside), renamed whole
            result["max_abs_diff"] = _onnx_check(model, tmp, inputs, [size, other])
        except Exception as e:  # noqa: BLE001  (torch.export / onnx / onnxruntime failures)
            if is_disk_full(e):
                raise
            bad = _onnx_culprits(arch) if arch is not None else []
            if bad:
                raise OnnxUnsupportedError(
                    f"cannot export to ONNX with dynamic spatial axes: attention module"
                    f"{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad)} "
                    "compute their token grids / resampling sizes in Python from the input "
                    "size, which the exported graph cannot follow; use model.py (any size) or "
                    "an architecture without them") from None
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(f"ONNX export failed: {first}") from None
        result["sizes"] = [list(size), list(other)]

    atomic_save(path, save)
    return result


def export_torchscript(model, inputs, path: Path) -> None:
    import torch

    def save(tmp: Path):
        with warnings.catch_warnings():
            # TracerWarnings about shape-dependent branches; FutureWarning: torch.jit is deprecated
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, tuple(inputs), check_trace=False)
            with torch.no_grad():
                want, got = model(*inputs), traced(*inputs)
            if not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
                raise ExportError("the traced TorchScript model disagrees with the eager model")
            with open(tmp, "wb") as f:  # to a path, a full disk aborts the process
                torch.jit.save(traced, f)

    atomic_save(path, save)


