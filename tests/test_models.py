"""`nas_attn.models`: torch-only files written to be copied whole into model.py."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nas_attn.models as models
from nas_attn.architecture.description import AttnSpec as A
from nas_attn.architecture.description import UNetArch
from nas_attn.architecture.registry import create_attention
from nas_attn.architecture.builder import build_unet

MODELS = Path(models.__file__).parent
FILES = sorted(p.stem for p in MODELS.glob("*.py") if p.stem != "__init__")
STDLIB = {"math", "typing", "functools", "itertools", "collections", "collections.abc"}
STANDALONE_STDLIB = {"hashlib", "io", "pathlib"}  # model.py's load(): the weights' hash check
FAMILIES = ["channel", "spatial", "gate", "dual", "cross", "selfattn", "timm_layers"]


def _tree(stem: str) -> ast.Module:
    return ast.parse((MODELS / f"{stem}.py").read_text())


def test_source_order_lists_every_file_after_its_imports():
    assert sorted(models.SOURCE_ORDER) == FILES
    for i, stem in enumerate(models.SOURCE_ORDER):
        for node in _tree(stem).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in models.SOURCE_ORDER[:i], (stem, node.module)


@pytest.mark.parametrize("stem", FILES)
def test_files_import_only_torch_and_the_standard_library(stem):
    tree = _tree(stem)
    stdlib = STDLIB | (STANDALONE_STDLIB if stem == "standalone" else set())
    for node in tree.body:  # module level: torch, stdlib, siblings
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] == "torch" or a.name in stdlib for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            assert node.module == "__future__" or node.module.split(".")[0] == "torch" or \
                node.module in stdlib, ast.unparse(node)
    nested = [n for f in tree.body if isinstance(f, (ast.ClassDef, ast.FunctionDef))
              for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
    roots = {(n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0]
             for n in nested}
    assert roots <= ({"timm"} if stem == "timm_layers" else set()), roots
    assert ".view(" not in (MODELS / f"{stem}.py").read_text() or stem == "timm_layers"


def test_top_level_names_are_unique_across_files():
    seen: dict[str, str] = {}
    for stem in FILES:
        for node in _tree(stem).body:
            names = [node.name] if isinstance(node, (ast.ClassDef, ast.FunctionDef)) else [
                t.id for n in ([node] if isinstance(node, (ast.Assign, ast.AnnAssign)) else [])
                for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)]
            for name in names:
                assert name not in seen, f"{name} defined in {seen.get(name)} and {stem}"
                seen[name] = stem


@pytest.mark.parametrize("stem", FAMILIES)
def test_family_files_open_with_their_papers(stem):
    doc = ast.get_docstring(_tree(stem))
    assert doc and "arXiv" in doc


def test_importing_the_package_loads_no_optional_dependency():
    code = ("import sys, nas_attn as na; import nas_attn.models, nas_attn.architecture.registry, "
            "nas_attn.architecture.description;"
            "na.build_unet(na.UNetArch(encoder=(na.AttnSpec.make('se'),) * 4));"
            "na.list_attention(); na.create_attention('cbam', 4, spatial_dims=2);"
            "print(sorted(m for m in ('optuna', 'timm', 'albumentations', 'rich', 'typer')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----- composite modules: composed, and their old state dicts still load -------------------------
OLD_KEYS = {  # the flat layout of nas-attn before composition (new name -> old name)
    "cbam": {"channel.mlp.": "mlp.", "spatial.conv.": "conv."},
    "dual": {"position.query.": "query.", "position.key.": "key.", "position.value.": "value.",
             "position.gamma": "gamma_position", "channel.gamma": "gamma_channel"},
}


def _old_layout(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for site_prefix in ("enc_attn.0.", "decoder.dec_attn.0."):
            if k.startswith(site_prefix):
                rest = k[len(site_prefix):]
                for new, old in {**OLD_KEYS["cbam"], **OLD_KEYS["dual"]}.items():
                    if rest.startswith(new):
                        rest = old + rest[len(new):]
                        break
                k = site_prefix + rest
        out[k] = v
    return out


@pytest.mark.parametrize("name", ["cbam", "dual"])
def test_old_checkpoints_of_composite_modules_still_load(name):
    arch = UNetArch(depth=1, widths=(4, 8), encoder=(A.make(name),), decoder=(A.make(name),))
    torch.manual_seed(0)
    ref = build_unet(arch)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.5 * torch.randn_like(p))
    old = _old_layout(ref.state_dict())
    assert set(old) != set(ref.state_dict())  # really the old names
    if name == "cbam":
        assert "enc_attn.0.mlp.0.weight" in old and "enc_attn.0.conv.weight" in old
    else:
        assert {"enc_attn.0.query.weight", "enc_attn.0.gamma_position",
                "enc_attn.0.gamma_channel"} <= set(old)
    model = build_unet(arch)
    model.load_state_dict(old, strict=True)
    x = torch.randn(2, 1, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x))


def test_composites_are_their_parts():
    cbam = create_attention("cbam", 8, spatial_dims=2, reduction=2, kernel_size=3)
    x = torch.randn(2, 8, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), cbam.spatial(cbam.channel(x)))
    dual = create_attention("dual", 8, spatial_dims=3, max_tokens=16)
    with torch.no_grad():
        for p in (dual.position.gamma, dual.channel.gamma):
            p.fill_(0.7)
        x = torch.randn(2, 8, 4, 5, 6)
        pos = dual.position(x)
        torch.testing.assert_close(dual(x), pos + dual.channel(x) - x)


def test_standalone_is_model_py_tail_and_runs_as_a_module():
    """model.py's functions are a real module (`nas_attn.models.standalone`): importable with
    its placeholders, and copied into every model.py after the literals it reads."""
    from nas_attn.exporting import render_model_py
    from nas_attn.models import standalone

    assert "parameters; input (1, 1, 64, 64)" in standalone.run_example()
    code = render_model_py(UNetArch(depth=2, widths=(4, 8, 8)))
    for name in ("build_model", "load", "preprocess", "predict", "run_example"):
        assert f"\ndef {name}(" in code, name
    assert code.index("\nINFERENCE = ") < code.index("\ndef build_model(")
    assert "\nNET = UNet\n" in code and "ARCH: dict = {" not in code  # no placeholder copied
