"""predict / evaluate / export of trained models: the exported file's preprocess and predict,
`nas-attn predict` (formats, bad inputs, no overwrite), `nas-attn evaluate`, and agreement of
the three with the validation of `nas-attn train`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_attn.architecture.description import AttnSpec as A
from nas_attn.architecture.description import UNetArch
from nas_attn.data import readers as R
from nas_attn.exporting import ExportError, export_arch, load_model_py
from nas_attn.models.infer import normalise_percentile, predict_logits
from nas_attn.training.checkpoint import save_checkpoint
from nas_attn.inference.metrics import score_split
from nas_attn.architecture.builder import build_unet

TINY = dict(depth=2, widths=(4, 8, 8))



def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def checkpoint(tmp: Path, arch: UNetArch, patch, seed: int = 0) -> Path:
    """A nas-attn checkpoint with random weights (no training needed)."""
    torch.manual_seed(seed)
    model = randomise(build_unet(arch), seed)
    with torch.no_grad():  # centre the logits so that a random model predicts every class
        x = torch.rand(2, arch.in_channels, *[16] * arch.spatial_dims)
        y = model(x).transpose(0, 1).reshape(arch.out_channels, -1)
        model.decoder.head.bias -= y.median(dim=1).values
    return save_checkpoint(tmp / "best.pt", arch, model.state_dict(),
                           {"patch_size": list(patch), "metrics": {"dice": 0.5}, "epoch": 1})


def shapes_folder(root: Path, names, size=(40, 36), seed=0) -> Path:
    """Grey images with a bright square (class 1) and a dim disc (class 2)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        m = np.zeros(size, np.uint8)
        y, x = rng.integers(2, size[0] - 14), rng.integers(2, size[1] - 14)
        m[y:y + 10, x:x + 10] = 1
        yy, xx = np.mgrid[:size[0], :size[1]]
        cy, cx = rng.integers(8, size[0] - 8), rng.integers(8, size[1] - 8)
        m[((yy - cy) ** 2 + (xx - cx) ** 2 < 25) & (m == 0)] = 2
        img = (np.where(m == 1, 180, np.where(m == 2, 100, 30)) + rng.integers(0, 40, size))
        for sub, arr in (("images", img.astype(np.uint8)), ("masks", m)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{name}.png")
    return root


# ---------------------------------------------------------------------------------- model.py
DATASET_NORM = {"normalisation": "dataset", "low_percentile": 0.5, "high_percentile": 99.5,
                "low": [10.0, 0.0, 5.0], "high": [900.0, 1200.0, 5.0]}


@pytest.mark.parametrize("norm", [None, DATASET_NORM, {"normalisation": "none"}],
                         ids=["image", "dataset", "none"])
def test_exported_preprocess_is_the_training_normalisation(tmp_path, norm):
    arch = UNetArch(spatial_dims=2, in_channels=3, **TINY)
    files = export_arch(arch, tmp_path, inference={"patch_size": [16, 16], **(norm or {})})
    mod = load_model_py(files["model"])
    rng = np.random.default_rng(0)
    settings = norm or {"normalisation": "image", "low_percentile": R.LOW_PCT,
                        "high_percentile": R.HIGH_PCT}
    for dtype, shape in ((np.uint16, (3, 33, 29)), (np.float32, (3, 20, 20)), (np.uint8, (3, 9, 7))):
        img = (rng.gamma(2.0, 300.0, size=shape)).astype(dtype)
        if dtype == np.float32:
            img[1, 3, 4] = np.nan
            img[2] = 7.0  # constant channel -> 0 (per image; dataset: below its low)
        want = R.normalise(img, settings)
        got = mod.preprocess(torch.from_numpy(img)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        if settings["normalisation"] == "dataset":  # an independent computation of the map
            x = np.nan_to_num(img.astype(np.float64), nan=np.inf)
            lo, hi = (np.asarray(settings[k])[:, None, None] for k in ("low", "high"))
            ref = np.where(hi > lo, np.clip((np.where(np.isfinite(x), x, lo) - lo)
                                            / np.where(hi > lo, hi - lo, 1), 0, 1), 0)
            np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    want_inf = {"patch_size": [16, 16], "overlap": 0.25, "low_percentile": R.LOW_PCT,
                "high_percentile": R.HIGH_PCT, **settings}
    assert mod.INFERENCE == want_inf
    meta = json.loads(files["meta"].read_text())
    assert meta["inference"] == want_inf
    doc = mod.__doc__
    assert "preprocess(image)" in doc and "predict(image, model)" in doc


def test_export_refuses_a_normalisation_that_is_not_numbers(tmp_path):
    arch = UNetArch(spatial_dims=2, in_channels=3, **TINY)
    for bad, words in (({**DATASET_NORM, "low": ["__import__('os')", 0, 0]}, "expected a number"),
                       ({**DATASET_NORM, "low": [0.0, 1.0]}, "2 'low' values for 3 channels"),
                       ({"normalisation": "zscore"}, "normalisation 'zscore' unknown")):
        with pytest.raises(ExportError, match=words):
            export_arch(arch, tmp_path / "x", inference=bad)
        assert not (tmp_path / "x" / "model.py").exists()


@pytest.mark.parametrize("dims", [2, 3])
def test_exported_predict_sliding_window_and_tta(tmp_path, dims):
    arch = UNetArch(spatial_dims=dims, classes=3, encoder=(A.make("se", reduction=2), None),
                    **TINY)
    patch = [12] * dims
    torch.manual_seed(1)
    ref = randomise(build_unet(arch), 1)
    files = export_arch(arch, tmp_path, weights=ref.state_dict(), inference={"patch_size": patch})
    mod = load_model_py(files["model"])
    model = mod.load(files["weights"])
    size = (30, 26) if dims == 2 else (17, 15, 14)
    image = torch.rand(*size) * 1000  # one channel, no channel axis
    x = normalise_percentile(image[None])[None]
    with torch.no_grad():
        whole = ref(x)
    want, _ = predict_logits(ref, x, patch_size=patch, overlap=0.25)
    assert not torch.allclose(want, whole, atol=1e-4)  # the sliding window did something
    torch.testing.assert_close(mod.predict(image, model, output="logits"), want[0],
                               atol=1e-5, rtol=1e-5)
    labels = mod.predict(image, model)
    assert labels.shape == size and labels.dtype == torch.int64
    assert torch.equal(labels, want[0].argmax(0))
    probs = mod.predict(image, model, output="probabilities", tta=True)
    assert probs.shape == (3, *size)
    torch.testing.assert_close(probs.sum(0), torch.ones(size), atol=1e-5, rtol=0)
    # all flips averaged: flipping the input flips the output
    axes = list(range(dims))
    flipped = mod.predict(image.flip(axes), model, output="probabilities", tta=True)
    torch.testing.assert_close(flipped, probs.flip([a + 1 for a in axes]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        mod.predict(torch.rand(2, *size), model)


# ---------------------------------------------------------------------------------- predict CLI
def test_predict_cli_formats_errors_and_no_overwrite(tmp_path, cli):
    arch = UNetArch(spatial_dims=2, classes=2, **TINY)
    ckpt = checkpoint(tmp_path, arch, [16, 16])
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 20)).astype(np.uint8)
    Image.fromarray(img).save(inp / "a.png")
    Image.fromarray(img).save(inp / "b.jpg")
    import tifffile

    tifffile.imwrite(inp / "c.tif", img.astype(np.uint16) * 10)
    np.save(inp / "d.npy", img.astype(np.float32)[..., None])  # (H, W, 1)
    Image.fromarray(np.stack([img] * 3, -1)).save(inp / "e_rgb.png")  # 3 channels: wrong
    np.save(inp / "f_vol.npy", rng.random((12, 24, 20)).astype(np.float32))  # 3D: wrong
    (inp / "g_broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code, text = cli("predict", inp, "--model", ckpt, "--out", out, "--device", "cpu")
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.tif", "d.npy"]
    flat = " ".join(text.split())
    assert "e_rgb.png: 3 channels" not in flat  # named by shape, not guessed
    assert "e_rgb.png" in flat and "no axis of 1 channel" in flat
    assert "f_vol.npy" in flat and "looks 3D" in flat
    assert "g_broken.png" in flat and "unreadable" in flat
    assert "Traceback" not in text
    # the masks: same content in every format, binary as {0, 255} in PNG/TIFF, ids in NPY
    model = randomise(build_unet(arch), 0)
    loaded = torch.load(ckpt, weights_only=True)
    model.load_state_dict(loaded["state_dict"])
    x = normalise_percentile(torch.from_numpy(img)[None].float())[None]
    want, _ = predict_logits(model.eval(), x, patch_size=[16, 16])
    want = (want[0, 0] > 0).numpy().astype(np.uint8)
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), want * 255)
    np.testing.assert_array_equal(np.load(out / "d.npy"), want)
    assert tifffile.imread(out / "c.tif").shape == (24, 20)
    # no overwrite without --force; the existing file is untouched
    (out / "a.png").write_bytes(b"mine")
    code, text = cli("predict", inp / "a.png", "--model", ckpt, "--out", out)
    assert code == 1 and "exists" in text and "--force" in text
    assert (out / "a.png").read_bytes() == b"mine"
    code, _ = cli("predict", inp / "a.png", "--model", ckpt, "--out", out, "--force")
    assert code == 0 and np.asarray(Image.open(out / "a.png")).shape == (24, 20)
    code, text = cli("predict", tmp_path / "nope.png", "--model", ckpt, "--out", out)
    assert code == 1 and "nope.png: no such file" in " ".join(text.split())
    code, text = cli("predict", inp, "--model", inp, "--out", out)
    assert code == 2 and "not an export folder" in text and "Traceback" not in text


def test_predict_nifti_keeps_affine_and_header(tmp_path, cli):
    nib = pytest.importorskip("nibabel")
    arch = UNetArch(spatial_dims=3, classes=3, **TINY)
    ckpt = checkpoint(tmp_path, arch, [8, 8, 8], seed=2)
    affine = np.diag([0.5, 0.7, 1.2, 1.0])
    affine[:3, 3] = [10, -4, 3]
    vol = np.random.default_rng(1).random((12, 10, 9)).astype(np.float32)
    img = nib.Nifti1Image(vol, affine)
    img.header["descrip"] = b"macaque test"
    (tmp_path / "in").mkdir()
    nib.save(img, tmp_path / "in" / "v.nii.gz")
    out = tmp_path / "out"
    code, text = cli("predict", tmp_path / "in" / "v.nii.gz", "--model", ckpt,
                     "--out", out, "--tta")
    assert code == 0, text
    res = nib.load(out / "v.nii.gz")
    np.testing.assert_allclose(res.affine, affine)
    assert res.header["descrip"].tobytes().rstrip(b"\0") == b"macaque test"
    data = np.asarray(res.dataobj)
    assert data.shape == (12, 10, 9) and data.dtype == np.uint8 and data.max() <= 2
    # a 2D model refuses the volume with a clear line
    (tmp_path / "m2").mkdir()
    ck2 = checkpoint(tmp_path / "m2", UNetArch(spatial_dims=2, **TINY), [8, 8])
    code, text = cli("predict", tmp_path / "in" / "v.nii.gz", "--model", ck2,
                     "--out", tmp_path / "o2")
    assert code == 1 and "NIfTI volume, but the model is 2D" in " ".join(text.split())


# ---------------------------------------------------------------------------------- agreement
def test_train_validation_evaluate_predict_and_model_py_agree(tmp_path, cli):
    """The same Dice on the same images from: the validation of `nas-attn train`,
    `nas-attn evaluate`, `nas-attn predict` (+ metrics.py), and model.py's predict in a
    subprocess that cannot import nas_attn. Images (40×36) are larger than the patch (16²), so
    every path tiles with the sliding window."""
    import nas_attn as na

    names = [f"t{i}" for i in range(6)] + [f"v{i}" for i in range(3)]
    data = shapes_folder(tmp_path / "data", names)
    val = tmp_path / "val"
    for sub in ("images", "masks"):
        (val / sub).mkdir(parents=True)
        for n in names[6:]:
            shutil.copy(data / sub / f"{n}.png", val / sub / f"{n}.png")
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(UNetArch(classes=3, encoder=(A.make("se", reduction=2), None),
                                  skip=(A.make("gate"), None), **TINY).to_json())
    run = tmp_path / "run"
    res = na.train(arch_file, str(data), epochs=2, out_dir=run, device="cpu",
                   train_options=dict(batch_size=4, samples_per_epoch=8, warmup_epochs=0,
                                      seed=0),
                   data_options=dict(val_pattern="v*", patch_size=[16]))
    train_dice = res.best["dice"]
    assert 0.0 < train_dice < 1.0
    # nas-attn evaluate on the checkpoint
    code, text = cli("evaluate", "--model", run / "best.pt", "--data", val,
                     "--json", tmp_path / "scores.json", "--device", "cpu")
    assert code == 0, text
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == 3 and len(scores["dice_per_class"]) == 2
    assert abs(scores["dice"] - train_dice) <= 1e-4
    assert "HD95" in text and "mean" in text
    # export the train output, evaluate the export folder too
    code, text = cli("export", "--checkpoint", run, "--out", tmp_path / "export")
    assert code == 0, text
    export = tmp_path / "export"
    assert json.loads((export / "meta.json").read_text())["inference"]["patch_size"] == [16, 16]
    code, _ = cli("evaluate", "--model", export, "--data", val, "--json",
                  tmp_path / "scores2.json", "--no-hd95")
    assert code == 0
    assert abs(json.loads((tmp_path / "scores2.json").read_text())["dice"] - train_dice) <= 1e-4
    gts = [np.array(Image.open(val / "masks" / f"{n}.png")) for n in names[6:]]
    # nas-attn predict, scored with metrics.py
    code, text = cli("predict", val / "images", "--model", export, "--out",
                     tmp_path / "pred")
    assert code == 0, text
    preds = [np.array(Image.open(tmp_path / "pred" / f"{n}.png")) for n in names[6:]]
    assert abs(score_split(preds, gts, 3)["dice"] - train_dice) <= 1e-4
    # model.py alone, in a fresh interpreter that cannot import nas_attn
    script = tmp_path / "use_export.py"
    script.write_text(textwrap.dedent('''
        import importlib.abc, importlib.util, sys
        from pathlib import Path

        class Guard(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "nas_attn":
                    raise ImportError("model.py imported nas_attn")

        sys.meta_path.insert(0, Guard())
        import numpy as np
        from PIL import Image

        export, images, out = map(Path, sys.argv[1:4])
        spec = importlib.util.spec_from_file_location("model", export / "model.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        model = m.load(export / "weights.pt")
        for f in sorted(images.glob("*.png")):
            image = np.asarray(Image.open(f))
            np.save(out / (f.stem + ".npy"), m.predict(image, model).numpy())
    '''))
    (tmp_path / "py").mkdir()
    proc = subprocess.run([sys.executable, str(script), str(export), str(val / "images"),
                           str(tmp_path / "py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    py_preds = [np.load(tmp_path / "py" / f"{n}.npy") for n in names[6:]]
    assert abs(score_split(py_preds, gts, 3)["dice"] - train_dice) <= 1e-4
    for a, b in zip(py_preds, preds):
        np.testing.assert_array_equal(a, b)


def test_evaluate_rejects_mismatched_folder(tmp_path, cli):
    arch = UNetArch(spatial_dims=2, in_channels=3, classes=2, **TINY)
    ckpt = checkpoint(tmp_path, arch, [16, 16])
    data = shapes_folder(tmp_path / "data", ["a", "b"])
    code, text = cli("evaluate", "--model", ckpt, "--data", data)
    assert code == 2 and "images have 1 channels, the model takes 3" in " ".join(text.split())


def test_loading_an_export_never_runs_its_model_py(tmp_path, cli):
    """Code appended to an exported model.py does not run on `predict`, `evaluate` or
    `load_model`; the predictions are those of the untouched export. A tampered arch.json or
    mismatched weights.pt is one line naming the file."""
    from nas_attn.inference.prediction import ModelLoadError, load_model

    data = shapes_folder(tmp_path / "data", ["a", "b"])
    arch = UNetArch(classes=3, encoder=(A.make("se", reduction=2), None), **TINY)
    ck = checkpoint(tmp_path, arch, (16, 16))
    export = tmp_path / "export"
    code, text = cli("export", "--checkpoint", ck, "--out", export)
    assert code == 0, text
    code, _ = cli("predict", data / "images", "--model", export, "--out", tmp_path / "clean")
    assert code == 0
    marker = tmp_path / "ran.txt"
    with open(export / "model.py", "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').write('model.py ran')\n"
                "INFERENCE = {'patch_size': [8, 8]}\n")  # after the real line: must not count
    # the edit is refused by its hash (meta.json's record), then accepted knowingly: not run
    code, text = cli("predict", data / "images", "--model", export, "--out", tmp_path / "after")
    assert code == 2 and "model.py: SHA-256" in text and "--accept-mismatch" in text, text
    assert "Traceback" not in text and not (tmp_path / "after").exists()
    code, text = cli("predict", data / "images", "--model", export, "--out", tmp_path / "after",
                     "--accept-mismatch")
    assert code == 0 and "accepted mismatch" in text, text
    code, text = cli("evaluate", "--model", export, "--data", data, "--no-hd95",
                     "--accept-mismatch")
    assert code == 0, text
    loaded = load_model(export, device="cpu", accept_mismatch=True)
    assert not marker.exists()
    assert loaded.patch_size == (16, 16)
    for n in ("a", "b"):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "clean" / f"{n}.png")),
                                      np.array(Image.open(tmp_path / "after" / f"{n}.png")))
    # without meta.json the settings are read from model.py's first INFERENCE literal, parsed
    (export / "meta.json").unlink()
    assert load_model(export, device="cpu").patch_size == (16, 16) and not marker.exists()
    good = (export / "arch.json").read_text()
    (export / "arch.json").write_text(good.replace('"depth": 2', '"depth": 99'))
    with pytest.raises(ModelLoadError, match="arch.json: not a valid architecture"):
        load_model(export, device="cpu")
    (export / "arch.json").write_text(good.replace('"classes": 3', '"classes": 4'))
    code, text = cli("predict", data / "images", "--model", export, "--out", tmp_path / "x")
    assert code != 0 and "weights.pt: does not load into the architecture of arch.json" in text
    assert "Traceback" not in text
