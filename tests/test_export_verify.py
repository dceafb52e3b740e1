"""Exports verify themselves: meta.json records the hash of every file, the versions and the
architecture's hash; load_model, predict, evaluate and model.py's load() refuse a folder whose
files are not the recorded ones (one line), unless the mismatch is accepted knowingly."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_attn.architecture.description import AttnSpec as A
from nas_attn.architecture.description import BlockSpec, UNetArch
from nas_attn.exporting import export_arch
from nas_attn.exporting.verify import ExportMismatchError, arch_sha256
from nas_attn.inference.prediction import load_model
from nas_attn.architecture.builder import build_unet


def _arch(act: str = "relu") -> UNetArch:
    return UNetArch(spatial_dims=2, depth=2, widths=(4, 8, 8), classes=3,
                    block=BlockSpec(act=act), encoder=(A.make("se", reduction=2), None))


def _weights(arch: UNetArch, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_unet(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return model.state_dict()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"m_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_runs(tmp_path):
    """Two exports of one architecture with different weights."""
    arch = _arch()
    a = tmp_path / "a"
    b = tmp_path / "b"
    export_arch(arch, a, weights=_weights(arch, 0), inference={"patch_size": [16, 16]},
                formats=("torchscript",), input_size=(16, 16))
    export_arch(arch, b, weights=_weights(arch, 1), inference={"patch_size": [16, 16]})
    assert _sha(a / "weights.pt") != _sha(b / "weights.pt")
    return arch, a, b


def test_meta_records_hashes_versions_and_architecture(two_runs):
    arch, a, _ = two_runs
    record = json.loads((a / "meta.json").read_text())["verify"]
    assert record["nas_attn"] == __import__("nas_attn").__version__
    assert record["torch"] == torch.__version__
    assert record["arch_sha256"] == arch_sha256(arch) != arch_sha256(_arch("gelu"))
    assert record["files"] == {n: _sha(a / n) for n in ("model.py", "model.ts", "weights.pt")}
    assert f"WEIGHTS_SHA256 = {_sha(a / 'weights.pt')!r}" in (a / "model.py").read_text()
    assert load_model(a, device="cpu").notes == []


def test_swapped_weights_are_refused_by_every_reader(two_runs, tmp_path, cli):
    arch, a, b = two_runs
    shutil.copy(b / "weights.pt", a / "weights.pt")  # same architecture: loads silently before
    with pytest.raises(ExportMismatchError, match=r"weights\.pt: SHA-256 .* differs"):
        load_model(a, device="cpu")
    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "x.npy", np.random.default_rng(0).random((20, 20), dtype=np.float32))
    code, text = cli("predict", images, "--model", a, "--out", tmp_path / "masks")
    assert code == 2 and "weights.pt: SHA-256" in text and "--accept-mismatch" in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / "masks").exists()
    code, text = cli("evaluate", "--model", a, "--data", tmp_path, "--no-hd95")
    assert code == 2 and "weights.pt: SHA-256" in text and "Traceback" not in text, text
    # accepted knowingly: b's weights are the ones used, and a note says so
    loaded = load_model(a, device="cpu", accept_mismatch=True)
    assert any(n.startswith("accepted mismatch:") and "weights.pt" in n for n in loaded.notes)
    want = build_unet(arch)
    want.load_state_dict(torch.load(b / "weights.pt", weights_only=True))
    assert all(torch.equal(v, want.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    code, text = cli("predict", images, "--model", a, "--out", tmp_path / "masks",
                     "--accept-mismatch")
    assert code == 0 and (tmp_path / "masks" / "x.npy").is_file(), text


def test_model_py_load_checks_the_weights_hash(two_runs):
    _, a, b = two_runs
    module = _import(a / "model.py")
    module.load(a / "weights.pt")  # its own weights
    with pytest.raises(ValueError, match=r"weights\.pt: SHA-256 .* differs .*check=False"):
        module.load(b / "weights.pt")
    other = module.load(b / "weights.pt", check=False)
    assert torch.equal(next(iter(other.state_dict().values())),
                       next(iter(torch.load(b / "weights.pt", weights_only=True).values())))


def test_architecture_and_formats_are_checked(two_runs):
    arch, a, _ = two_runs
    good = (a / "arch.json").read_text()
    # another architecture with the same tensors (gelu for relu): the weights would load
    (a / "arch.json").write_text(_arch("gelu").to_json(indent=2))
    with pytest.raises(ExportMismatchError, match="arch.json: describes another architecture"):
        load_model(a, device="cpu")
    (a / "arch.json").write_text(good)
    (a / "model.ts").write_bytes(b"not the traced model")
    with pytest.raises(ExportMismatchError, match=r"model\.ts: SHA-256"):
        load_model(a, device="cpu")
    (a / "model.ts").unlink()  # a format removed to save space is not a mismatch
    assert load_model(a, device="cpu").notes == []


def test_versions_are_notes_and_older_exports_are_unverified(two_runs):
    _, a, _ = two_runs
    meta = json.loads((a / "meta.json").read_text())
    meta["verify"]["torch"] = "1.0.0"
    (a / "meta.json").write_text(json.dumps(meta))
    assert load_model(a, device="cpu").notes == [
        f"exported with torch 1.0.0, running {torch.__version__}"]
    del meta["verify"]
    (a / "meta.json").write_text(json.dumps(meta))
    notes = load_model(a, device="cpu").notes
    assert len(notes) == 1 and "not verified" in notes[0]
    (a / "meta.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="meta.json: must hold a JSON object"):
        load_model(a, device="cpu")
