"""The preprocessed cache (nas_attn.data.cache): 3D folders decoded once to disk and read back
patch by patch; what it gives equals the in-memory path; stale caches are rebuilt, damaged ones
refused by name; workers that start together build it once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas_attn.data import DataConfig, check_folder, clear_cache, load_data, make_loaders
from nas_attn.data.cached_array import CachedArray
from nas_attn.data.check import scan_folder
from nas_attn.errors import DataError
from volumes import write_nifti

SPACING = (0.8, 0.5, 1.5)


def _nifti(path: Path, arr: np.ndarray, spacing=SPACING) -> None:
    write_nifti(path, arr, spacing)


def _folder(root: Path, n: int = 5, aux: bool = True, seed: int = 0) -> Path:
    """A 3D images/ + masks/ (+ aux/) folder of NIfTI volumes of several sizes, with NaN
    pixels and int16 intensities, three classes."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (14 + i, 12, 10 + 2 * (i % 2))
        mask = np.zeros(shape, np.uint8)
        mask[2:6, 2:7, 2:5] = 1
        mask[8:12, 6:10, 4:8] = 2
        img = rng.normal(300 * (i + 1), 50, (*shape, 2))
        img[..., 1] *= 3
        img = img.astype(np.int16)
        _nifti(root / "images" / f"case{i}.nii.gz", img)
        _nifti(root / "masks" / f"case{i}.nii.gz", mask)
        if aux:
            a = rng.normal(0, 1, shape).astype(np.float32)
            a[0, 0, 0] = np.nan
            _nifti(root / "aux" / f"case{i}.nii.gz", a)
    return root


def _both(cfg: dict):
    clear_cache()
    mem = load_data(DataConfig(**cfg, cache="off"))
    clear_cache()
    cached = load_data(DataConfig(**cfg, cache="on"))
    return mem, cached


@pytest.mark.parametrize("normalisation", ["image", "dataset", "none"])
def test_the_cache_gives_what_memory_gives(tmp_path, normalisation):
    src = _folder(tmp_path / "d")
    (m_tr, m_va), (c_tr, c_va) = _both({"source": str(src), "normalisation": normalisation})
    assert isinstance(c_tr.images[0], CachedArray) and isinstance(m_tr.images[0], np.ndarray)
    assert c_tr.names == m_tr.names and c_va.names == m_va.names
    assert c_tr.normalisation == m_tr.normalisation
    assert c_tr.spacings == m_tr.spacings
    np.testing.assert_allclose(m_tr.spacings, [SPACING] * len(m_tr), rtol=1e-6)
    assert (c_tr.classes, c_tr.in_channels, c_tr.aux_channels) == (3, 2, 1)
    for m, c in ((m_tr, c_tr), (m_va, c_va)):
        for a, b in zip(m.images + m.aux, c.images + c.aux):
            got = np.asarray(b)
            assert got.dtype == np.float32 and got.shape == a.shape
            np.testing.assert_array_equal(got, a)
            # a patch read from the cache is the patch of the normalised whole image
            np.testing.assert_array_equal(b[:, 1:5, 2:9, 3:7], a[:, 1:5, 2:9, 3:7])
        for a, b in zip(m.masks, c.masks):
            np.testing.assert_array_equal(np.asarray(b), a)


def test_training_patches_from_the_cache_equal_those_from_memory(tmp_path):
    src = _folder(tmp_path / "d", aux=False)
    cfg = {"source": str(src), "patch_size": [8]}
    (m_tr, m_va), (c_tr, c_va) = _both(cfg)
    dc = DataConfig(**cfg, fg_oversample=0.7)
    mem, _ = make_loaders(m_tr, m_va, dc, batch_size=2, seed=3)
    cached, val = make_loaders(c_tr, c_va, dc, batch_size=2, seed=3)
    assert cached.dataset.fg[0] and not isinstance(cached.dataset.fg[0][0], np.ndarray)
    for i in range(12):
        a, b = mem.dataset[i], cached.dataset[i]
        assert a["image"].equal(b["image"]) and a["mask"].equal(b["mask"])
    item = next(iter(val))
    assert item["image"].shape[1:] == (2, *c_va.shapes[0]) and "spacing" in item


def test_a_changed_folder_gets_a_new_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAS_ATTN_CACHE_DIR", str(cache))
    src = _folder(tmp_path / "d", n=4, aux=False)
    cfg = DataConfig(source=str(src), val_fraction=0.25)
    clear_cache()
    tr, va = load_data(cfg)
    first = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(first) == 1
    m = np.zeros((14, 12, 10), np.uint8)
    m[1:3, 1:3, 1:3] = 2
    _nifti(src / "masks" / "case0.nii.gz", m)
    clear_cache()
    tr2, va2 = load_data(cfg)
    dirs = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(dirs) == 2 and first[0] in dirs  # stale one left, never read
    both = dict(zip(tr2.names + va2.names, tr2.masks + va2.masks))
    np.testing.assert_array_equal(np.asarray(both["case0"]), m)


def _one_cache(cache: Path) -> Path:
    (d,) = [p for p in cache.iterdir() if p.is_dir()]
    return d


@pytest.mark.parametrize("damage, words", [
    ("truncate", "truncated"), ("edit", "edited"), ("remove", "missing"),
    ("manifest", "damaged")])
def test_a_damaged_cache_is_refused_by_name(tmp_path, monkeypatch, damage, words):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAS_ATTN_CACHE_DIR", str(cache))
    src = _folder(tmp_path / "d", n=3, aux=False)
    clear_cache()
    load_data(DataConfig(source=str(src)))
    d = _one_cache(cache)
    target = d / "000001_image.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-40])
    elif damage == "edit":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "remove":
        target.unlink()
    else:
        target = d / "manifest.json"
        target.write_text("{not json")
    clear_cache()
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(src)))
    msg = str(e.value)
    assert "\n" not in msg and str(target) in msg and words in msg and str(d) in msg


def test_the_cli_names_a_damaged_cache_in_one_line(tmp_path, cli):
    src = _folder(tmp_path / "d", n=3, aux=False)
    cache = tmp_path / "cache"
    arch = tmp_path / "arch.json"
    from nas_attn.architecture.description import UNetArch

    arch.write_text(UNetArch(spatial_dims=3, in_channels=2, classes=3, depth=2,
                             widths=(4, 8, 8)).to_json())
    args = ("train", "--arch", str(arch), "--data", str(src), "--epochs", "1",
            "--cache-dir", str(cache), "--runs-dir", str(tmp_path / "runs"))
    code, out = cli(*args)
    assert code == 0, out
    f = _one_cache(cache) / "000000_mask.npy"
    f.write_bytes(f.read_bytes()[:-10])
    clear_cache()
    code, out = cli(*args, "--out", str(tmp_path / "again"))
    assert code == 2 and "Traceback" not in out, out
    assert f"cache file {f}: truncated" in out


def test_check_folder_streams_and_reports_what_a_full_decode_reports(tmp_path):
    src = _folder(tmp_path / "d", n=3)
    clear_cache()
    streamed = check_folder(src)
    full, data = scan_folder(src.resolve())
    assert data is not None
    assert streamed.summary() == full.summary()


def test_two_processes_starting_together_build_one_cache(tmp_path):
    src = _folder(tmp_path / "d", n=3, aux=False)
    cache = tmp_path / "cache"
    code = ("import sys; from nas_attn.data import DataConfig, load_data; "
            "tr, va = load_data(DataConfig(source=sys.argv[1])); print(len(tr) + len(va))")
    env = {**os.environ, "NAS_ATTN_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(src)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["3", "3"]
    entries = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 1 and not entries[0].startswith("."), entries  # no temporary left


def test_auto_caches_3d_folders_only(tmp_path):
    from PIL import Image

    src3 = _folder(tmp_path / "d3", n=3, aux=False)
    src2 = tmp_path / "d2"
    for sub in ("images", "masks"):
        (src2 / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
            src2 / "images" / f"s{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:9, 4:9] = 1
        Image.fromarray(m).save(src2 / "masks" / f"s{i}.png")
    clear_cache()
    assert isinstance(load_data(DataConfig(source=str(src3)))[0].images[0], CachedArray)
    assert isinstance(load_data(DataConfig(source=str(src2)))[0].images[0], np.ndarray)
    tr, _ = load_data(DataConfig(source=str(src2), cache="on"))
    assert isinstance(tr.images[0], CachedArray) and tr.spacings is None


def test_evaluate_reads_a_3d_folder_through_the_cache_and_scores_alike(tmp_path, monkeypatch):
    import torch

    from nas_attn.architecture.description import UNetArch
    from nas_attn.data import cache as cache_mod
    from nas_attn.inference.evaluation import evaluate_folder
    from nas_attn.inference.trained import InferenceConfig, TrainedModel
    from nas_attn.architecture.builder import build_unet

    src = _folder(tmp_path / "d", n=3)
    torch.manual_seed(0)
    arch = UNetArch(spatial_dims=3, in_channels=2, aux_channels=1, classes=3, depth=2,
                    widths=(4, 8, 8))
    loaded = TrainedModel(arch, build_unet(arch).eval(), InferenceConfig(3, overlap=0.25), "m",
                          "export")
    monkeypatch.setenv("NAS_ATTN_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()
    cached = evaluate_folder(loaded, src, hd95=True)
    assert any((tmp_path / "cache").iterdir())
    monkeypatch.setattr(cache_mod, "wants_cache", lambda *a: False)
    clear_cache()
    memory = evaluate_folder(loaded, src, hd95=True)
    assert cached["per_image"] == memory["per_image"] and cached["dice"] == memory["dice"]
    assert cached["hd95_unit"] == memory["hd95_unit"] == "mm"


def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    src = _folder(tmp_path / "d", n=3, aux=False)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("NAS_ATTN_CACHE_DIR", str(tmp_path / "file" / "cache"))
    clear_cache()
    with pytest.raises(DataError, match=r"^cache folder .*file/cache: not writable .*"
                                        r"\$NAS_ATTN_CACHE_DIR$"):
        load_data(DataConfig(source=str(src)))


def test_the_cache_knows_every_file_a_dataset_reads(tmp_path):
    """A Decathlon dataset.json naming an image outside its folder is refused (an edit there
    went unseen by the cache, which trained on the stale array); a cache folder inside the
    dataset is refused (each build there changed the folder's signature: another full copy)."""
    import json

    from nas_attn.data.cache import open_cached

    src = _folder(tmp_path / "ds", n=3, aux=False)
    root = tmp_path / "dec"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(3):
        where = "../ds/images" if i == 0 else "./imagesTr"  # the first image lives elsewhere
        if i:
            os.link(src / "images" / f"case{i}.nii.gz", root / "imagesTr" / f"case{i}.nii.gz")
        os.link(src / "masks" / f"case{i}.nii.gz", root / "labelsTr" / f"case{i}.nii.gz")
        training.append({"image": f"{where}/case{i}.nii.gz",
                         "label": f"./labelsTr/case{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "bg", "1": "a", "2": "b"},
        "numTraining": 3, "training": training}))
    report = check_folder(root)
    assert any("training[0].image '../ds/images/case0.nii.gz' lies outside the dataset "
               "folder" in p for p in report.problems), report.problems
    with pytest.raises(DataError, match="lies outside the dataset folder"):
        load_data(DataConfig(source=str(root), cache="on"))
    with pytest.raises(DataError, match="is inside the dataset folder"):
        open_cached(src, 3, str(src / "cache"))
    assert not (src / "cache").exists()


def test_auto_caches_3d_npy_volumes(tmp_path):
    """A folder of 3D .npy volumes is cached under `cache: auto` (decoded into memory they
    cost 400 MB resident for 96 MB more volumes), 2D .npy images are not."""
    from nas_attn.data.cache import wants_cache

    for name, shape in (("vol", (12, 10, 8)), ("flat", (12, 10))):
        root = tmp_path / name
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
            np.save(root / sub / "a.npy", np.zeros(shape, np.uint8))
    assert wants_cache("auto", tmp_path / "vol", None)
    assert not wants_cache("auto", tmp_path / "flat", None)
    clear_cache()
    tr, va = load_data(DataConfig(source=str(_npy_volumes(tmp_path / "many")),
                                  cache_dir=str(tmp_path / "c")))
    assert isinstance(tr.images[0], CachedArray)


def _npy_volumes(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        m = np.zeros((12, 10, 8), np.uint8)
        m[2:6, 2:6, 2:6] = 1
        for sub, arr in (("images", (m * 100 + rng.integers(0, 20, m.shape))[None]
                          .astype(np.float32)), ("masks", m)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            np.save(root / sub / f"v{i}.npy", arr)
    return root


def test_building_a_cache_reports_its_progress(tmp_path, monkeypatch):
    """A line at most every PROGRESS_EVERY_S seconds while the cases are written (here: every
    case), and one when the cache is built, as notices (`nas_attn.notices`)."""
    from nas_attn import notices
    from nas_attn.data import cache

    lines: list[str] = []
    monkeypatch.setattr(notices, "PRINT", lines.append)
    monkeypatch.setattr(cache, "PROGRESS_EVERY_S", 0.0)
    clear_cache()
    load_data(DataConfig(source=str(_npy_volumes(tmp_path / "vols", n=3)),
                         cache_dir=str(tmp_path / "c")))
    assert [l.split(": ")[1].split(",")[0] for l in lines] == ["building"] * 3 + ["built"], lines
    assert "3 cases written" in lines[-1] and "vols" in lines[-1]
