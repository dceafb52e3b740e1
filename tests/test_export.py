"""Export of one architecture to a standalone model.py: exact round trip, safety, formats."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_attn.architecture.description import AttnSpec as A
from nas_attn.architecture.description import BlockSpec, UNetArch
from nas_attn.errors import ArchError, NasAttnError
from nas_attn.exporting import ExportError, export_arch, render_model_py
from nas_attn.exporting.text import lit as _lit
from nas_attn.exporting.text import sanitize_text
from nas_attn.architecture.builder import build_unet
from random_weights import randomise

# the sliding window needs the last three; load() hashes weights.pt with hashlib, io, pathlib
STDLIB = {"math", "typing", "functools", "itertools", "collections", "hashlib", "io", "pathlib"}
TORCH_ONLY = ["se", "eca", "cbam_channel", "spatial", "cbam", "scse", "position",
              "channel_self", "dual", "self", "gate", "cross"]


def arch_2d() -> UNetArch:
    """Every torch-only module once, a single module on a skip (IgnoreGuide), deep supervision."""
    return UNetArch(
        spatial_dims=2, in_channels=2, classes=3, depth=4, widths=(4, 6, 8, 8, 8),
        deep_supervision=True,
        encoder=(A.make("se", reduction=2), A.make("cbam_channel", reduction=2),
                 A.make("position", max_tokens=16, reduction=2), A.make("channel_self")),
        bottleneck=A.make("dual", reduction=2, max_tokens=4),
        skip=(A.make("gate", resample="fine"), A.make("cross", heads=2, max_tokens=16),
              A.make("gate"), A.make("eca", kernel_size=3)),
        decoder=(A.make("scse", combine="max", reduction=2), A.make("cbam", kernel_size=3),
                 A.make("spatial", kernel_size=5), A.make("self", heads=2, pos=True)),
    )


def arch_3d() -> UNetArch:
    return UNetArch(
        spatial_dims=3, in_channels=1, classes=2, depth=4, widths=(4, 4, 6, 8, 8),
        block=BlockSpec(convs=1, norm="batch", act="gelu", dropout=0.1), upsample="interp",
        encoder=(A.make("eca"), A.make("scse"), A.make("self", max_tokens=8), A.make("dual")),
        bottleneck=A.make("position"),
        skip=(A.make("cross", max_tokens=27), A.make("gate"), A.make("se", reduction=2),
              A.make("gate", resample="fine")),
        decoder=(A.make("spatial", kernel_size=3), A.make("cbam", reduction=2),
                 A.make("cbam_channel"), A.make("channel_self", max_tokens=4)),
    )


def arch_aux() -> UNetArch:
    return UNetArch(
        spatial_dims=2, depth=2, widths=(4, 8, 8), aux_channels=2,
        block=BlockSpec(norm="instance", act="leaky_relu"),
        skip=(A.make("cross", context="aux", heads=1), A.make("gate")),
        bottleneck=A.make("self"),
    )


def arch_small() -> UNetArch:
    return UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8),
                    encoder=(A.make("se", reduction=2), None), skip=(None, A.make("gate")))


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imports_and_calls(code: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(code)
    imports, calls = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            imports |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            imports.add((n.module or ".").split(".")[0])
        elif isinstance(n, ast.Call):  # f(...) -> "f", a.f(...) -> ".f" and "a.f"
            f = n.func
            if isinstance(f, ast.Name):
                calls.add(f.id)
            elif isinstance(f, ast.Attribute):
                calls.add("." + f.attr)
                if isinstance(f.value, ast.Name):
                    calls.add(f.value.id + "." + f.attr)
    return imports, calls


def assert_inert(code: str) -> None:
    imports, calls = imports_and_calls(code)
    assert imports <= {"__future__", "torch"} | STDLIB, imports
    bad = {"exec", "eval", "__import__", "compile", "open", ".system", ".popen", ".__import__"}
    assert not calls & bad, calls & bad
    assert not any(c.split(".")[0] in ("os", "sys", "subprocess", "builtins") for c in calls)


def export_and_compare(arch: UNetArch, tmp: Path, sizes, *, seed: int = 0, aux: bool = False):
    torch.manual_seed(seed)
    ref = randomise(build_unet(arch), seed)
    tmp.mkdir(parents=True, exist_ok=True)
    weights = tmp / "trained.pt"
    torch.save(ref.state_dict(), weights)
    files = export_arch(arch, tmp / "export", weights=weights,
                        meta={"score": 0.5, "source": {"study": "t", "trial": seed}})
    assert {"model", "arch", "weights", "meta"} <= set(files)
    code = files["model"].read_text()
    assert_inert(code)
    assert UNetArch.from_json(files["arch"].read_text()) == arch
    mod = import_file(files["model"], f"exported_{arch.spatial_dims}d_{seed}")
    model = mod.load(files["weights"])
    assert not model.training
    state = torch.load(files["weights"], weights_only=True)
    assert state.keys() == ref.state_dict().keys()
    outs = {}
    for size in sizes:
        x = torch.randn(2, arch.in_channels, *size)
        a = torch.randn(2, arch.aux_channels, *size) if aux else None
        with torch.no_grad():
            want, got = ref.forward_all(x, a), model.forward_all(x, a)
        assert len(want) == len(got)
        for w, o in zip(want, got):
            assert w.shape == o.shape and torch.isfinite(w).all() and w.std() > 0
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)
        outs[size] = (x, want[0])
    return files, mod, outs


# ---------------------------------------------------------------------------------- round trips
def test_round_trip_2d_every_torch_module(tmp_path):
    arch = arch_2d()
    assert sorted(arch.attention_names()) == sorted(TORCH_ONLY)
    files, mod, _ = export_and_compare(arch, tmp_path, [(32, 32), (37, 29)])
    assert sorted(mod.ATTENTION) == sorted(TORCH_ONLY)
    assert mod.ARCH["sites"]["decoder.0"] == ("scse", {"combine": "max", "reduction": 2})
    assert mod.META == {"score": 0.5, "source": {"study": "t", "trial": 0}}
    code = files["model"].read_text()
    assert "@register" not in code and "register(" not in code
    assert "from nas_attn/models/tokens.py" in code


def test_round_trip_3d(tmp_path):
    arch = arch_3d()
    assert sorted(arch.attention_names()) == sorted(TORCH_ONLY)
    export_and_compare(arch, tmp_path, [(12, 12, 12), (13, 11, 9)], seed=1)


def test_round_trip_aux_modality_and_early_fusion(tmp_path):
    export_and_compare(arch_aux(), tmp_path / "cross", [(20, 20), (19, 23)], seed=2, aux=True)
    fused = UNetArch(spatial_dims=2, depth=1, widths=(4, 8), aux_channels=1, upsample="interp",
                     block=BlockSpec(norm="group", act="silu"), encoder=(A.make("eca"),))
    export_and_compare(fused, tmp_path / "fused", [(15, 16)], seed=3, aux=True)


def test_standalone_in_subprocess_without_nas_attn(tmp_path):
    arch = arch_2d()
    files, _, outs = export_and_compare(arch, tmp_path, [(21, 18)], seed=4)
    (x, want), = outs.values()
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import importlib.abc, importlib.util, sys

        class Guard(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "nas_attn":
                    raise ImportError("model.py imported nas_attn")

        sys.meta_path.insert(0, Guard())
        import torch

        spec = importlib.util.spec_from_file_location("model", sys.argv[1])
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        model = m.load(sys.argv[2])
        with torch.no_grad():
            y = model(torch.load(sys.argv[3], weights_only=True))
        torch.save(y, sys.argv[4])
        assert not [k for k in sys.modules if k.split(".")[0] in ("nas_attn", "timm")]
    '''))
    res = subprocess.run([sys.executable, str(script), str(files["model"]), str(files["weights"]),
                          str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    torch.testing.assert_close(torch.load(tmp_path / "y.pt", weights_only=True), want,
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- content
def test_only_used_modules_are_copied():
    code = render_model_py(arch_small())
    assert_inert(code)
    compile(code, "model.py", "exec")
    tree = ast.parse(code)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"PassThrough", "IgnoreGuide", "ConvBlock", "SqueezeExcite",
                       "AttentionGate", "UNetDecoder", "UNet"}
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "pool_to" in funcs  # the gate's one helper from tokens.py ...
    assert "attend_tokens" not in funcs and "token_grid" not in funcs  # ... and nothing else
    assert {"make_attention", "build_model", "load"} <= funcs
    assert ast.get_docstring(tree).startswith("Standalone 2D attention UNet")
    assert render_model_py(arch_small()) == code  # deterministic


def test_docstring_carries_meta_and_architecture():
    meta = {"score_dice": 0.8731, "score_metric": "validation Dice per class", "params": 123456,
            "flops": 2.5e9, "latency_ms": 3.25, "study": "liver-3d", "trial": 17,
            "state": "complete", "storage": "sqlite:///runs/s.db"}
    doc = ast.get_docstring(ast.parse(render_model_py(arch_small(), meta=meta)))
    assert "Score (validation Dice): 0.8731\nMetric: validation Dice per class\n" \
           "Parameters: 123,456\nFLOPs (forward, one patch): 2.5e+09\nLatency (ms): 3.25\n" \
           "Study: liver-3d\nTrial: 17\nState: complete\nstorage: sqlite:///runs/s.db" in doc
    assert "encoder.0   se(reduction=2)" in doc and "skip.1      gate" in doc
    assert "model = load('weights.pt')" in doc


def test_meta_labels_cover_the_keys_real_callers_pass():
    """Every key that a search trial, export_trial or export_checkpoint passes has a label."""
    from nas_attn.exporting.text import META_LABELS
    from nas_attn.searching.cost import Cost

    root = Path(__file__).resolve().parents[1] / "nas_attn"
    passed = set()
    for rel in ("searching/trial_export.py", "exporting/assemble.py", "searching/objective.py", "api.py"):
        for n in ast.walk(ast.parse((root / rel).read_text())):
            if isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value ==
                                               "score_dice" for k in n.keys):
                passed |= {k.value for k in n.keys if isinstance(k, ast.Constant)}
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and \
                    isinstance(n.value, ast.Name) and n.value.id == "meta":
                passed.add(n.slice.value)
    passed |= set(Cost.__dataclass_fields__)  # search/objective.py passes **cost.as_dict()
    assert {"score_dice", "params", "study", "trial", "epoch", "checkpoint"} <= passed
    assert passed <= set(META_LABELS), passed - set(META_LABELS)


# ---------------------------------------------------------------------------------- safety
EVIL = '"""\nimport os; os.system("x")\n"""'


def test_malicious_meta_is_inert(tmp_path):
    meta = {"score": 0.5, "note": EVIL, EVIL: 1, "cost": {EVIL: EVIL, "params": 10},
            "source": {"study": "a'''b\\\\", "trial": 3, "storage": "postgresql://u:secret@h/db"},
            "extra": [EVIL, {"x": EVIL}], "nan": float("nan"), "obj": object()}
    code = render_model_py(arch_small(), meta=meta)
    assert_inert(code)
    tree = ast.parse(code)
    doc = ast.get_docstring(tree)
    assert '"' not in doc and "\\" not in doc and "'''" not in doc
    assert "secret" not in code
    # the evil text survives only inside the docstring / as plain string constants
    stmts = [n for n in tree.body if not isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    assert isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant)
    mod_ns: dict = {}
    exec(compile(code, "model.py", "exec"), mod_ns)  # defines things, runs nothing else
    assert mod_ns["META"]["score"] == 0.5
    assert all("\n" not in v and '"' not in v for v in mod_ns["META"]["cost"] if isinstance(v, str))
    files = export_arch(arch_small(), tmp_path, meta=meta)
    json.loads(files["meta"].read_text())
    assert "secret" not in files["meta"].read_text()


def test_malicious_option_value_is_rejected(monkeypatch):
    base = arch_small()
    evil = A.make("scse", combine='add")\nimport os\nos.system("x")\n#')
    with pytest.raises(ArchError):  # the architecture itself refuses it
        base.with_sites(decoder_0=evil)
    # with the registry's own check switched off, the exporter still refuses to emit it
    from nas_attn.architecture import registry

    monkeypatch.setattr(registry, "validate_options", lambda *a, **k: None)
    bad = base.with_sites(decoder_0=evil)
    with pytest.raises(ExportError, match="not exportable"):
        render_model_py(bad)
    with pytest.raises(ExportError, match="not finite"):
        render_model_py(base.with_sites(decoder_0=A.make("position", reduction=float("inf"))))


def test_output_is_the_same_whether_or_not_ruff_is_on_path(tmp_path):
    """A `ruff` on PATH that would rewrite any file it is given must change nothing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ruff").write_text("#!/bin/sh\ncat > /dev/null\necho 'x = 1'\n")
    (fake / "ruff").chmod(0o755)
    script = ("import sys; from nas_attn.architecture.description import UNetArch; "
              "from nas_attn.exporting import render_model_py; "
              f"arch = UNetArch.from_json({arch_small().to_json()!r}); "
              "sys.stdout.write(render_model_py(arch, meta={'score_dice': 0.25}))")
    outs = []
    for path in (f"{fake}:{os.environ['PATH']}", os.defpath):
        env = {**os.environ, "PATH": path}
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, cwd=Path(__file__).resolve().parents[1], timeout=120)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
    assert outs[0] == outs[1] and "x = 1" not in outs[0]
    assert outs[0] == render_model_py(arch_small(), meta={"score_dice": 0.25})
    assert_inert(outs[0])
    ns: dict = {}
    exec(compile(outs[0], "model.py", "exec"), ns)
    assert sum(p.numel() for p in ns["build_model"]().parameters()) == \
        sum(p.numel() for p in build_unet(arch_small()).parameters())


def test_literal_and_text_guards():
    assert _lit({"a": [1, 2.5, True, None, "add"]}, "x") == "{'a': [1, 2.5, True, None, 'add']}"
    for bad in ['a"b', "a'b", "a\nb", "a\\b", "", "x" * 65, "é"]:
        with pytest.raises(ExportError):
            _lit(bad, "x")
    with pytest.raises(ExportError):
        _lit(object(), "x")
    assert sanitize_text(EVIL) == "import os; os.system(x)"


def test_bad_encoder_names_rejected():
    evil = UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), encoder_name='timm:x"""\nimport os')
    with pytest.raises(ExportError, match="not exportable"):
        render_model_py(evil)
    aux = UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), encoder_name="timm:test_efficientnet",
                   aux_channels=1, skip=(A.make("cross", context="aux"), None))
    with pytest.raises(ExportError, match="timm encoder"):
        render_model_py(aux)


# ---------------------------------------------------------------------------------- files, formats
def test_weights_checks_and_atomic_files(tmp_path):
    arch = arch_small()
    torch.manual_seed(0)
    model = randomise(build_unet(arch))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, ckpt)
    files = export_arch(arch, tmp_path / "out", weights=ckpt)
    state = torch.load(files["weights"], weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        [".nas-attn-output", "arch.json", "meta.json", "model.py", "weights.pt"]  # marker: ours
    other = build_unet(arch_aux()).state_dict()
    with pytest.raises(ExportError, match="do not match"):
        export_arch(arch, tmp_path / "bad", weights=other)
    with pytest.raises(ExportError, match="unknown export formats"):
        export_arch(arch, tmp_path / "bad", formats=("tflite",))
    assert not (tmp_path / "bad" / "model.py").exists()
    assert issubclass(ExportError, NasAttnError)


def test_reexport_leaves_no_file_of_the_earlier_model(tmp_path):
    out = tmp_path / "out"
    export_arch(arch_small(), out, weights=build_unet(arch_small()).state_dict(),
                meta={"epoch": 3}, formats=("torchscript",))
    assert {"weights.pt", "meta.json", "model.ts"} <= {p.name for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")  # a user's file: refused unless --force, then kept
    with pytest.raises(NasAttnError, match="notes.txt"):
        export_arch(arch_aux(), out)
    # another architecture, no weights: none of the old ones stay
    export_arch(arch_aux(), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == \
        [".nas-attn-output", "arch.json", "meta.json", "model.py", "notes.txt"]
    assert UNetArch.from_json((out / "arch.json").read_text()) == arch_aux()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export(tmp_path):
    arch = arch_small()
    torch.manual_seed(0)
    ref = randomise(build_unet(arch))
    files = export_arch(arch, tmp_path, weights=ref.state_dict(), formats=("torchscript",),
                        input_size=(24, 20))
    ts = torch.jit.load(str(files["torchscript"]))
    x = torch.randn(1, 1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), ref(x), atol=1e-5, rtol=1e-5)


def test_onnx_missing_packages_give_a_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ExportError, match=r"onnxruntime.*pip install 'nas-attn\[onnx\]'"):
        export_arch(arch_small(), tmp_path, formats=("onnx",))
    assert not (tmp_path / "model.py").exists()


# the modules without a token budget (tests/test_onnx_all.py exports every module)
ONNX_MODULES = ["se", "eca", "cbam_channel", "spatial", "cbam", "scse"]


@pytest.mark.parametrize("dims", [2, 3])
def test_onnx_dynamic_axes_match_torch_at_several_sizes(tmp_path, dims):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    arch = UNetArch(spatial_dims=dims, depth=2, widths=(4, 6, 8), classes=3,
                    encoder=(A.make("se", reduction=2), A.make("cbam_channel")),
                    bottleneck=A.make("cbam", kernel_size=3),
                    skip=(A.make("eca"), A.make("scse")),
                    decoder=(A.make("spatial", kernel_size=3), None))
    assert set(arch.attention_names()) == set(ONNX_MODULES)
    torch.manual_seed(0)
    ref = randomise(build_unet(arch))
    size = (16, 12) if dims == 2 else (8, 12, 8)
    files = export_arch(arch, tmp_path, weights=ref.state_dict(), formats=("onnx",),
                        input_size=size)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # weights inside, nothing left over
        ".nas-attn-output", "arch.json", "meta.json", "model.onnx", "model.py", "weights.pt"]
    sess = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    others = [(20, 28), (4, 8)] if dims == 2 else [(12, 8, 16), (4, 4, 4)]
    for batch, s in ((1, size), (3, others[0]), (2, others[1])):
        x = torch.randn(batch, 1, *s)
        with torch.no_grad():
            want = ref(x).numpy()
        got = sess.run(None, {"image": x.numpy()})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


TIMM_ARCHS = {
    "attention": dict(encoder=(A.make("gc", reduction=2), A.make("coord")),
                      bottleneck=A.make("ese"), decoder=(A.make("sk", reduction=2), None)),
    "encoder": dict(encoder_name="timm:test_efficientnet", in_channels=2, deep_supervision=True,
                    encoder=(A.make("se"), A.make("gc")), bottleneck=A.make("position"),
                    skip=(A.make("gate"), A.make("cross", heads=2))),
}


@pytest.mark.parametrize("kind", sorted(TIMM_ARCHS))
def test_timm_exports_with_timm_import(tmp_path, kind):
    """timm attention layers and timm encoders: model.py imports timm, says so, round-trips."""
    pytest.importorskip("timm")
    arch = UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), **TIMM_ARCHS[kind])
    code = render_model_py(arch)
    imports, _ = imports_and_calls(code)
    assert imports <= {"__future__", "torch", "timm"} | STDLIB and "timm" in imports
    doc = ast.get_docstring(ast.parse(code))
    assert "Needs only torch and timm, not nas_attn" in doc and "exported with timm" in doc
    torch.manual_seed(5)
    ref = randomise(build_unet(arch), 5)
    files = export_arch(arch, tmp_path, weights=ref.state_dict())
    model = import_file(files["model"], f"exported_timm_{kind}").load(files["weights"])
    x = torch.randn(2, arch.in_channels, 19, 22)
    with torch.no_grad():
        for w, o in zip(ref.forward_all(x), model.forward_all(x), strict=True):
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)
