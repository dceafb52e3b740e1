"""The test split and `finalize`: full-budget retraining, a winner chosen on validation only,
test scored once, and the rank correlation of the short-trial proxy."""
import json
import textwrap

import numpy as np
import optuna
import pytest
from PIL import Image

from nas_attn.data import DataConfig, load_data, load_test
from nas_attn.errors import DataError
from nas_attn.searching.finalize import candidates
from nas_attn.searching.verdict import spearman

optuna.logging.set_verbosity(optuna.logging.WARNING)


def folder(root, n=6, channels=1, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = np.zeros((24, 24), np.uint8)
        m[4:12, 4:12] = 1 + i % (classes - 1)
        img = (m * 70 + rng.integers(0, 30, m.shape)).astype(np.uint8)
        if channels == 3:
            img = np.stack([img] * 3, -1)
        for sub, arr in (("images", img), ("masks", m)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"s{i}.png")
    return root


def test_test_txt_is_held_out_of_train_and_val(tmp_path):
    root = folder(tmp_path / "ds")
    (root / "test.txt").write_text("s4\ns5\n")
    (root / "val.txt").write_text("s3\n")
    tr, va = load_data(DataConfig(source=str(root)))
    te = load_test(DataConfig(source=str(root)))
    assert tr.names == ["s0", "s1", "s2"] and va.names == ["s3"] and te.names == ["s4", "s5"]
    # only a test list: the random split happens among the rest
    (root / "val.txt").unlink()
    tr, va = load_data(DataConfig(source=str(root)))
    assert not {"s4", "s5"} & set(tr.names + va.names) and len(tr) + len(va) == 4


def test_test_pattern_and_separate_folder(tmp_path):
    root = folder(tmp_path / "ds")
    cfg = DataConfig(source=str(root), val_pattern="s[01]", test_pattern="s5")
    tr, va = load_data(cfg)
    assert va.names == ["s0", "s1"] and tr.names == ["s2", "s3", "s4"]
    assert load_test(cfg).names == ["s5"]
    other = folder(tmp_path / "test", n=2, seed=3)
    te = load_test(DataConfig(source=str(root), test_source=str(other)))
    assert len(te) == 2 and te.classes == tr.classes
    rgb = folder(tmp_path / "rgb", n=2, channels=3)
    with pytest.raises(DataError, match="3 image channels"):
        load_test(DataConfig(source=str(root), test_source=str(rgb)))
    assert load_test(DataConfig(source=str(root))) is None
    built = DataConfig(builtin_n=8, builtin_size=24)
    te = load_test(built)
    tr, va = load_data(built)
    assert len(te) == 4 and not any(np.array_equal(a, b) for a in te.images for b in tr.images)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


SPACE = """
macro: {depth: [1], base_width: [4]}
encoder: {choices: [none, se, eca]}
skip: {choices: [none]}
training: {batch_size: 4, lr: [0.005]}
budget: {epochs: 1, samples_per_epoch: 4}
data: {source: builtin, builtin_n: 8, builtin_size: 24}
search: {trials: 4, n_startup_trials: 4, sampler: random, pruner: none}
"""



def test_finalize_end_to_end(tmp_path, cli):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    runs = str(tmp_path / "runs")
    code, out = cli("search", "--space", str(space), "--study", "f", "--runs-dir",
                        runs, "--trials", "4")
    assert code == 0, out
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'runs' / 'nas_attn.db'}")
    study = optuna.load_study(study_name="f", storage=storage)
    assert study.metric_names == ["val Dice (per class, pooled)"]
    chosen = candidates(study, 1)
    labels = [t.user_attrs.get("baseline", "") for t in chosen]
    assert "plain_unet" in labels and sum(1 for lb in labels if not lb) <= 1

    code, out = cli("finalize", "f", "--top", "1", "--seeds", "2", "--epochs", "1",
                        "--runs-dir", runs)
    assert code == 0, out
    assert "Final answer" in out and "Spearman" in out
    res = json.loads((tmp_path / "runs" / "f" / "final" / "finalize.json").read_text())
    assert res["seeds"] == 2 and res["splits"]["test"] == 4
    for r in res["candidates"]:
        assert len(r["val"]) == len(r["test"]) == 2
        assert r["val_mean"] == pytest.approx(sum(r["val"]) / 2)
        assert all(0.0 <= v <= 1.0 for v in r["val"] + r["test"])
    # the winner is chosen on validation means, whatever the test says
    assert res["winner"] == max(res["candidates"], key=lambda r: r["val_mean"])["trial"]
    study = optuna.load_study(study_name="f", storage=storage)
    assert study.user_attrs["finalize"]["winner"] == res["winner"]

    code, out = cli("show", "f", "--runs-dir", runs)
    assert code == 0 and "Final answer" in out
    code, out = cli("export", "f", "--runs-dir", runs, "--out",
                        str(tmp_path / "exp"))
    assert code == 0, out
    meta = json.loads((tmp_path / "exp" / "meta.json").read_text())
    # the recommended model: the winner, or the plain UNet of its size when attention did not
    # beat it by two seed standard deviations
    assert meta["trial"] == res["recommended"]["trial"]
    assert meta["attention_verdict"] == res["attention_gain"]["verdict"]
    if res["attention_gain"]["recommend"] == "winner":
        assert meta["trial"] == res["winner"]
    rec = next(r for r in res["candidates"] if r["trial"] == res["recommended"]["trial"])
    assert meta["score_dice"] == pytest.approx(rec["val_mean"])
    assert (tmp_path / "exp" / "weights.pt").exists()


def test_full_budget_is_never_less_than_a_trial():
    from nas_attn.searching.finalize import full_budget
    from nas_attn.searching.space_files import load_space, parse_space

    default = load_space("default")  # 15 epochs x 128 samples per trial
    assert full_budget(default) == {"epochs": 30, "samples_per_epoch": 128}
    long = parse_space({"budget": {"epochs": 40}}, "x")
    assert full_budget(long) == {"epochs": 80}
