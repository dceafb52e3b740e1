"""ONNX and TorchScript for every attention module: the exported graphs follow the input's size.

Each module sits at every site kind it may occupy (a single module at encoder, bottleneck, skip
and decoder sites; a paired one at the skips) of a small UNet of depth 2, exported once and run
by onnxruntime at three sizes per dimensionality: one within the token budget, two beyond it, all
odd multiples of 2**depth; the largest |onnxruntime - torch| must be <= 1e-4. The winners that
docs/benchmarks/search-quality.md reports for the ready spaces' searches are checked the same way at their own widths.
Run with `-s` to see the measured differences."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from nas_attn.architecture import registry
from nas_attn.architecture.description import AttnSpec as A
from nas_attn.architecture.description import BlockSpec, UNetArch
from nas_attn.exporting import ExportError, export_arch
from nas_attn.exporting.formats import _onnx_save
from nas_attn.models import tokens
from nas_attn.architecture.builder import build_unet
from random_weights import randomise

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

BUDGET = {2: 64, 3: 100}
# (12, 4): 48 tokens <= 64; (4, 4, 4): 64 <= 100; the others are beyond; every side an odd
# multiple of 2**depth = 4
SIZES = {2: [(12, 4), (20, 28), (36, 44)], 3: [(4, 4, 4), (12, 8, 12), (12, 20, 12)]}


def _every_site(name: str, dims: int) -> UNetArch:
    info = registry.get_info(name)
    opts = {"max_tokens": BUDGET[dims]} if "max_tokens" in info.options() else {}
    if "reduction" in info.options():
        opts["reduction"] = 2
    if "heads" in info.options():
        opts["heads"] = 2
    s = A.make(name, **opts)
    if info.kind == "paired":
        return UNetArch(spatial_dims=dims, depth=2, widths=(4, 8, 8), classes=3, skip=(s, s))
    return UNetArch(spatial_dims=dims, depth=2, widths=(4, 8, 8), classes=3, encoder=(s, s),
                    bottleneck=s, skip=(s, None), decoder=(s, s))


def _onnx_diffs(arch: UNetArch, tmp_path, sizes, seed: int = 0, *, whole: bool = False
                ) -> list[float]:
    """Export `arch` with random weights (at sizes[1]); |onnxruntime - torch| at each size.
    `whole`: through `export_arch` (model.py, its own check recorded in meta.json), else the
    exporter alone (half the time)."""
    ref = randomise(build_unet(arch), seed)
    path = tmp_path / "model.onnx"
    if whole:
        files = export_arch(arch, tmp_path, weights=ref.state_dict(), formats=("onnx",),
                            input_size=sizes[1])
        checks = json.loads(files["meta"].read_text())["format_checks"]["onnx"]
        assert checks["max_abs_diff"] <= 1e-4 and len(checks["sizes"]) == 3
    else:
        inputs = [torch.randn(2, arch.in_channels, *sizes[1])]
        if arch.aux_channels:
            inputs.append(torch.randn(2, arch.aux_channels, *sizes[1]))
        _onnx_save(ref, inputs, path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    gen = torch.Generator().manual_seed(seed + 1)
    diffs = []
    for batch, size in zip((2, 3, 1), sizes):
        xs = [torch.randn(batch, arch.in_channels, *size, generator=gen)]
        if arch.aux_channels:
            xs.append(torch.randn(batch, arch.aux_channels, *size, generator=gen))
        with torch.no_grad():
            want = ref(*xs)
            want = (want[0] if isinstance(want, (list, tuple)) else want).numpy()
        got = sess.run(None, dict(zip(names, [x.numpy() for x in xs])))[0]
        assert got.shape == want.shape
        assert np.abs(want).max() > 1e-2  # a real output, not zeros on both sides
        diffs.append(float(np.abs(got - want).max()))
    return diffs


CASES = [(name, dims) for dims in (2, 3) for name in registry.names()
         if dims in registry.get_info(name).dims]


@pytest.mark.parametrize("name,dims", CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def test_every_module_exports_to_onnx_at_every_site_kind(name, dims, tmp_path):
    diffs = _onnx_diffs(_every_site(name, dims), tmp_path, SIZES[dims])
    print(f"\nONNX {name} {dims}D max|ort - torch| at {SIZES[dims]}: "
          + ", ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) <= 1e-4


# the winners docs/benchmarks/search-quality.md reports for the ready spaces' searches
WINNERS = {
    "builtin search (trial 8)": dict(
        encoder=(A.make("cbam", kernel_size=3, reduction=4), A.make("se", reduction=8),
                 A.make("self", heads=2)),
        bottleneck=A.make("position"), skip=(A.make("scse"), A.make("cross"), None),
        decoder=(A.make("eca"), None, A.make("eca"))),
    "inia19 search (trial 4)": dict(
        encoder=(A.make("eca"), A.make("eca"), A.make("scse")), bottleneck=A.make("position"),
        skip=(A.make("gate", resample="coarse"), A.make("scse"), A.make("cross")),
        decoder=(A.make("eca"), A.make("se", reduction=8), A.make("eca"))),
    "inia19 random search (trial 7)": dict(
        encoder=(A.make("scse"), None, A.make("cbam", kernel_size=7, reduction=4)),
        skip=(A.make("cross"), None, A.make("gate", resample="fine")),
        decoder=(A.make("se", reduction=4), None, A.make("eca"))),
}


@pytest.mark.parametrize("which", sorted(WINNERS))
def test_ready_space_winners_export_to_onnx(which, tmp_path):
    arch = UNetArch(spatial_dims=2, depth=3, widths=(16, 32, 64, 128), upsample="interp",
                    block=BlockSpec(norm="batch", act="relu"), classes=3, **WINNERS[which])
    # default budget 256: (24, 8) is within it, the others beyond; multiples of 2**3 = 8
    sizes = [(24, 8), (40, 56), (72, 88)]
    diffs = _onnx_diffs(arch, tmp_path, sizes, whole=True)
    print(f"\nONNX winner {which} max|ort - torch| at {sizes}: "
          + ", ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) <= 1e-4


def test_timm_encoder_exports_to_onnx(tmp_path):
    pytest.importorskip("timm")
    arch = UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), in_channels=2, classes=3,
                    encoder_name="timm:test_efficientnet", deep_supervision=True,
                    encoder=(A.make("se"), A.make("gc")),
                    bottleneck=A.make("position", max_tokens=64),
                    skip=(A.make("gate"), A.make("cross", heads=2, max_tokens=64)))
    diffs = _onnx_diffs(arch, tmp_path, [(12, 4), (20, 28), (36, 44)])
    assert max(diffs) <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("dims", [2, 3])
def test_torchscript_takes_other_sizes(dims, tmp_path):
    s = A.make("dual", max_tokens=BUDGET[dims], reduction=2)
    arch = UNetArch(spatial_dims=dims, depth=2, widths=(4, 8, 8), classes=3,
                    encoder=(s, A.make("self", max_tokens=BUDGET[dims], heads=2)), bottleneck=s,
                    skip=(A.make("cross", max_tokens=BUDGET[dims], heads=2), A.make("gate")),
                    decoder=(A.make("channel_self", max_tokens=BUDGET[dims]), s))
    ref = randomise(build_unet(arch))
    files = export_arch(arch, tmp_path, weights=ref.state_dict(), formats=("torchscript",),
                        input_size=SIZES[dims][1])
    ts = torch.jit.load(str(files["torchscript"]))
    odd = (13, 7) if dims == 2 else (9, 7, 5)  # not multiples of 2**depth at all
    for batch, size in zip((2, 3, 1, 1), SIZES[dims] + [odd]):
        x = torch.randn(batch, 1, *size)
        with torch.no_grad():
            want = ref(x)
            assert float((ts(x) - want).abs().max()) <= 1e-4 and float(want.abs().max()) > 1e-2


def test_traced_token_grid_equals_token_grid():
    """The scripted grid the traced graphs run gives token_grid's grid, elongated sizes and
    clamped sides included (where its loops run hundreds of times)."""
    rng = random.Random(0)
    cases = [((600, 2), 512), ((2, 342), 7), ((4096, 489), 64), ((1, 1, 4096), 1024),
             ((63, 4096), 512), ((16, 16), 256), ((17, 16), 256), ((5, 5, 5), 0)]
    for _ in range(1500):
        d = rng.choice((2, 3))
        size = tuple(rng.choice((1, 2, 3, 7, 12, 31, 64, 65, 200, 600, 4096)) if rng.random() < .5
                     else rng.randint(1, 700) for _ in range(d))
        cases.append((size, rng.choice((1, 3, 16, 64, 100, 256, 1000, 4096, 65536))))
    for size, budget in cases:
        got = tuple(int(v) for v in tokens._traced_token_grid(size, budget))
        want = tokens.token_grid(size, budget)
        assert got == want, (size, budget)
        if 0 < budget < math.prod(size):
            assert math.prod(got) <= budget


def test_a_module_that_fails_to_export_is_named(tmp_path, monkeypatch):
    """If the exporter cannot express a module (an opset without one of its operators), the
    error names the module; nothing is left behind."""
    real = torch.onnx.export

    def export(model, *a, **k):  # model.py's classes: the gate is known by its class name
        if any(type(m).__name__ == "AttentionGate" for m in model.modules()):
            raise RuntimeError("Unsupported: ONNX export of operator made_up")
        return real(model, *a, **k)

    monkeypatch.setattr(torch.onnx, "export", export)
    arch = UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), encoder=(A.make("se"), None),
                    skip=(A.make("gate"), None), bottleneck=A.make("position"))
    with pytest.raises(ExportError, match=r"opset 17\): attention module 'gate' failed "
                                          r"\(Unsupported: ONNX export of operator made_up\)"):
        export_arch(arch, tmp_path, formats=("onnx",), input_size=(16, 16))
    assert not (tmp_path / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
