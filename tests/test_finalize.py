"""The test split and `finalize`: full-budget retraining, a winner chosen on validation only,
test scored once, and the rank correlation of the short-trial proxy."""
import json
import textwrap

import numpy as np
import optuna
import pytest
from PIL import Image

from nas_attn.architecture.description import UNetArch
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



def _search(tmp_path, cli, study="f"):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", str(space), "--study", study, "--runs-dir", runs,
                    "--trials", "4")
    assert code == 0, out
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'nas_attn.db'}")
    return runs, storage


def test_finalize_end_to_end(tmp_path, cli):
    from nas_attn.stats.counts import CaseCounts

    runs, storage = _search(tmp_path, cli)
    study = optuna.load_study(study_name="f", storage=storage)
    assert study.metric_names == ["val Dice (per class, pooled)"]
    for t in study.trials:  # every trial keeps the per-case counts of its best epoch
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs:
            assert CaseCounts.from_dict(t.user_attrs["val_cases"]).pooled() == t.values[0]
            lo, hi = t.user_attrs["dice_ci"]
            assert lo <= t.values[0] <= hi
    chosen = candidates(study, 1)
    labels = [t.user_attrs.get("baseline", "") for t in chosen]
    assert "plain_unet" in labels and sum(1 for lb in labels if not lb) <= 1

    code, out = cli("finalize", "f", "--top", "1", "--seeds", "2", "--confirm-seeds", "2",
                    "--epochs", "1", "--runs-dir", runs)
    assert code == 0, out
    assert "Final answer" in out and "Spearman" in out and "round 1 (2 seeds" in out
    res = json.loads((runs / "f" / "final" / "finalize.json").read_text())
    assert res["seeds"] == 2 and res["splits"]["test"] == 4
    assert res["race"]["over"] in ("settled", "max_seeds", "budget")
    for r in res["candidates"]:
        assert len(r["val"]) == len(r["test"]) == len(r["seeds"]) == 2
        assert r["val_mean"] == pytest.approx(sum(r["val"]) / 2)
        assert all(0.0 <= v <= 1.0 for v in r["val"] + r["test"])
        # the per-case counts of every run recompute its scores exactly
        assert [CaseCounts.from_dict(c).pooled() for c in r["val_cases"]] == r["val"]
        assert [CaseCounts.from_dict(c).pooled() for c in r["test_cases"]] == r["test"]
        assert r["val_ci"]["low"] <= r["val_mean"] <= r["val_ci"]["high"]
    g = res["attention_gain"]
    assert g["verdict"] in ("helps", "hurts", "no detectable difference",
                            "no attention among the candidates")
    if g.get("val"):  # decided on fresh seeds, never on the race's
        assert res["confirmation"]["seeds"] == [100, 101]
        assert "fresh confirmation seeds" in g["on"]
        assert (runs / "f" / "final" / "confirmation.png").exists()
        assert g["picture_artifact"]
    study = optuna.load_study(study_name="f", storage=storage)
    stored = study.user_attrs["finalize"]
    assert stored["winner"] == res["winner"] and "val_cases" not in stored["candidates"][0]

    code, out = cli("show", "f", "--runs-dir", runs)
    assert code == 0 and "Final answer" in out and "95 % CI" in out
    code, out = cli("export", "f", "--runs-dir", runs, "--out", str(tmp_path / "exp"))
    assert code == 0, out
    meta = json.loads((tmp_path / "exp" / "meta.json").read_text())
    # the recommended model: the champion when attention helps, else the plain UNet of its size
    assert meta["trial"] == res["recommended"]["trial"]
    assert meta["attention_verdict"] == g["verdict"]
    if g["recommend"] == "winner":
        assert meta["trial"] == res["winner"]
    rec = next(r for r in res["candidates"] if r["key"] == res["recommended"]["key"])
    assert meta["score_dice"] == pytest.approx(rec["val_mean"])
    assert meta["score_dice_ci95"]["low"] <= meta["score_dice"]
    assert (tmp_path / "exp" / "weights.pt").exists()


# ----- the race's driver, its trainings replaced by fixed per-case counts ---------------------
QUALITY = {"se": 0.92, "eca": 0.45, "": 0.60}
"""The share of each reference region an architecture finds, by its attention ('' = none)."""


def _fake_counts(quality, seed, cases=12):
    ref = np.random.default_rng(7).integers(10, 80, (cases, 2))
    q = np.clip(quality + np.random.default_rng(seed).normal(0, 0.01)
                + np.random.default_rng(1000 + seed).normal(0, 0.03, ref.shape), 0, 1)
    tp = np.round(ref * q).astype(np.int64)
    from nas_attn.stats.counts import CaseCounts

    return CaseCounts(tuple(f"c{i}" for i in range(cases)), tp, (ref - tp) // 3, ref - tp)


def fake_training(monkeypatch, calls, fail_at=None):
    """Runner._train replaced: a record with fixed per-case counts per (architecture, seed)."""
    from nas_attn.searching.racing import Runner

    def _train(self, arm, seed):
        calls.append((arm.key, seed))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        q = QUALITY["".join(arm.arch.attention_names())]
        val, test = _fake_counts(q, seed), _fake_counts(q, seed + 500, cases=6)
        return {"key": arm.key, "trial": arm.trial, "label": arm.label, "seed": seed,
                "val": val.pooled(), "val_cases": val.to_dict(), "test": test.pooled(),
                "test_cases": test.to_dict(), "best_epoch": 1, "checkpoint": None,
                "seconds": 0.0, "train_config": {"epochs": 9}}

    monkeypatch.setattr(Runner, "_train", _train)


def _trial_of(study, attention):
    return next(t.number for t in study.trials if t.state.name == "COMPLETE"
                and "".join(UNetArch.from_json(t.user_attrs["arch"]).attention_names())
                == attention)


def test_the_race_drops_the_clearly_worse_and_confirms_on_fresh_seeds(tmp_path, cli,
                                                                       monkeypatch):
    from nas_attn.searching.finalize import finalize

    runs, storage = _search(tmp_path, cli)
    study = optuna.load_study(study_name="f", storage=storage)
    if not all(any("".join(UNetArch.from_json(t.user_attrs["arch"]).attention_names()) == a
                   for t in study.trials) for a in ("se", "eca")):
        for params in ({"encoder.0.attn": "se"}, {"encoder.0.attn": "eca"}):
            study.enqueue_trial(params)
        cli("search", "--study", "f", "--runs-dir", runs, "--trials", "2")
        study = optuna.load_study(study_name="f", storage=storage)
    calls = []
    fake_training(monkeypatch, calls)
    rounds = []
    res = finalize(study, top=2, seeds=4, confirm_seeds=3, runs_dir=runs,
                   on_round=rounds.append)
    se, eca = f"trial_{_trial_of(study, 'se'):04d}", f"trial_{_trial_of(study, 'eca'):04d}"
    first = res["race"]["rounds"][0]
    assert first["best"] == se and eca in first["dropped"]
    assert first["comparisons"][eca]["verdict"] == "hurts"
    assert "plain_unet" not in [k for r in res["race"]["rounds"] for k in r["dropped"]]
    assert res["race"]["over"] == "settled" and len(rounds) == len(res["race"]["rounds"])
    # trained: every entrant under 2 seeds, then the champion and its plain on 3 fresh seeds
    assert sorted(s for k, s in calls if k == se) == [0, 1, 100, 101, 102]
    assert sorted(s for k, s in calls if k == eca) == [0, 1]
    g = res["attention_gain"]
    assert g["verdict"] == "helps" and g["recommend"] == "winner"
    assert g["val"]["diff"]["low"] > 0 and g["val"]["diff"]["noise"] == "seeds"
    assert res["recommended"]["trial"] == res["winner"] == _trial_of(study, "se")
    assert {r["status"] for r in res["candidates"]} == {"survived", "dropped in round 1"}


def test_without_a_gain_from_attention_the_best_plain_entrant_is_recommended(tmp_path, cli,
                                                                           monkeypatch):
    """On inia19-macaque finalize recommended the plain UNet of the champion's size (0.87 on
    test) while a plain UNet of another size had scored 0.92 in the same race. The champion's
    own plain UNet still decides whether attention helps; the model recommended is the race's
    best survivor without attention."""
    from nas_attn.searching.finalize import finalize
    from nas_attn.searching.racing import Runner

    (tmp_path / "space.yaml").write_text(textwrap.dedent(SPACE).replace(
        "base_width: [4]", "base_width: [4, 8]"))
    runs = tmp_path / "runs"
    args = ("search", "--space", str(tmp_path / "space.yaml"), "--study", "f", "--runs-dir",
            runs, "--trials", "1")
    assert cli(*args)[0] == 0  # the plain UNet baseline, at the narrowest width (4)
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'nas_attn.db'}")
    optuna.load_study(study_name="f", storage=storage).enqueue_trial(
        {"base_width": 8, "encoder.0.attn": "se"})  # the champion, twice as wide
    assert cli(*args)[0] == 0
    study = optuna.load_study(study_name="f", storage=storage)
    calls = []
    fake_training(monkeypatch, calls)
    faked = Runner._train

    def _train(self, arm, seed):  # the baseline plain UNet is the best model; attention is not
        rec = faked(self, arm, seed)
        q = 0.90 if arm.label == "plain_unet" else 0.60
        val, test = _fake_counts(q, seed), _fake_counts(q, seed + 500, cases=6)
        return {**rec, "val": val.pooled(), "val_cases": val.to_dict(), "test": test.pooled(),
                "test_cases": test.to_dict()}

    monkeypatch.setattr(Runner, "_train", _train)
    seen = []
    res = finalize(study, top=1, seeds=3, confirm_seeds=2, runs_dir=runs,
                   progress=lambda p: seen.append(p.name))
    # the live progress names the champion's own plain UNet by its trial, as the reports do
    assert f"the plain UNet at trial {_trial_of(study, 'se')}'s size" in seen, seen
    g = res["attention_gain"]
    assert g["verdict"] != "helps" and g["recommend"] == "plain"
    plain = next(r for r in res["candidates"] if r["label"] == "plain_unet")
    assert g["plain_key"] != plain["key"]  # the champion's own plain UNet is another entrant
    assert res["recommended"]["key"] == plain["key"], res["recommended"]
    assert UNetArch.from_dict(res["recommended"]["arch"]).attention_names() == []


def test_a_killed_finalize_resumes_from_its_last_finished_training(tmp_path, cli, monkeypatch):
    from nas_attn.searching.finalize import finalize

    runs, storage = _search(tmp_path, cli)
    study = optuna.load_study(study_name="f", storage=storage)
    whole = []
    fake_training(monkeypatch, whole)
    want = finalize(study, top=2, seeds=3, confirm_seeds=2, runs_dir=tmp_path / "a")
    for stop in (1, 4, len(whole)):
        out = tmp_path / f"killed{stop}"
        calls = []
        fake_training(monkeypatch, calls, fail_at=stop)
        with pytest.raises(KeyboardInterrupt):
            finalize(study, top=2, seeds=3, confirm_seeds=2, runs_dir=out)
        kept = list((out / "f" / "final" / "runs").glob("*.json"))
        assert len(kept) == stop - 1
        assert not list((out / "f" / "final" / "claims").glob("*.claim"))  # released
        again = []
        fake_training(monkeypatch, again)
        got = finalize(study, top=2, seeds=3, confirm_seeds=2, runs_dir=out)
        assert len(again) == len(whole) - (stop - 1)  # nothing finished is trained again
        assert not set(again) & set(calls[:stop - 1])
        assert got["race"]["rounds"] == want["race"]["rounds"]
        assert got["attention_gain"]["verdict"] == want["attention_gain"]["verdict"]


def test_noise_check_measures_the_floor_and_the_search_quotes_it(tmp_path, cli):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    runs = tmp_path / "runs"
    code, out = cli("noise", "--space", space, "--seeds", "2", "--epochs", "1", "--runs-dir",
                    runs, "--json", tmp_path / "noise.json")
    assert code == 0, out
    flat = " ".join(out.split())
    assert "seed-to-seed spread of the pooled Dice: SD" in flat
    assert "seeds per arm needed to detect +0.5 Dice points" in flat
    summary = json.loads((tmp_path / "noise.json").read_text())
    assert len(summary["scores"]) == 2 and summary["run_sd"] >= 0
    assert summary["pair"]["verdict"] in ("helps", "hurts", "no detectable difference")
    (record,) = (runs / "noise").glob("*.json")
    code, again = cli("noise", "--space", space, "--seeds", "2", "--epochs", "1",
                      "--runs-dir", runs)
    assert code == 0 and again.count("read back") == 2  # finished seeds are kept
    code, out = cli("search", "--space", space, "--study", "n", "--runs-dir", runs,
                    "--trials", "2")
    assert code == 0, out
    assert "noise check (2 seeds of" in " ".join(out.split())
    code, out = cli("noise", "--from-finalize", "n", "--runs-dir", runs)
    assert code != 0 and "no finished finalize" in out
    assert record.exists()


def test_full_budget_is_never_less_than_a_trial():
    from nas_attn.searching.space import full_budget
    from nas_attn.searching.space_files import load_space, parse_space

    default = load_space("default")  # 15 epochs x 128 samples per trial
    assert full_budget(default) == {"epochs": 30, "samples_per_epoch": 128}
    long = parse_space({"budget": {"epochs": 40}}, "x")
    assert full_budget(long) == {"epochs": 80}


def test_workers_split_the_race_and_decide_as_one_process_does(tmp_path, cli):
    """`finalize --workers 2`: each training runs once, in one of the workers, and the result is
    the single-process one (the same seeds give the same runs)."""
    runs, storage = _search(tmp_path, cli)
    args = ["--top", "1", "--seeds", "2", "--confirm-seeds", "2", "--epochs", "1"]
    code, out = cli("finalize", "f", *args, "--runs-dir", runs, "--workers", "2")
    assert code == 0, out
    final = runs / "f" / "final"
    done = [json.loads(p.read_text()) for p in (final / "runs").glob("*.json")]
    pairs = [(r["key"], r["seed"]) for r in done]
    assert len(pairs) == len(set(pairs)) == 8  # 2 entrants x 2 seeds, 2 arms x 2 confirmations
    assert {p.name for p in (final / "workers").iterdir()} == {"worker_0.log", "worker_1.log"}
    assert not list((final / "claims").glob("*.claim"))
    res = json.loads((final / "finalize.json").read_text())
    import shutil

    shutil.copytree(runs, tmp_path / "alone", ignore=shutil.ignore_patterns("final"))
    code, out = cli("finalize", "f", *args, "--runs-dir", tmp_path / "alone")
    assert code == 0, out
    alone = json.loads((tmp_path / "alone" / "f" / "final" / "finalize.json").read_text())
    assert [r["val"] for r in res["candidates"]] == [r["val"] for r in alone["candidates"]]
    assert res["attention_gain"]["verdict"] == alone["attention_gain"]["verdict"]


def test_claims_are_exclusive_and_a_dead_holder_s_claim_is_taken_over(tmp_path):
    import subprocess
    import sys

    from nas_attn.searching.claims import Claims

    a, b = Claims(tmp_path), Claims(tmp_path)
    b.pid = a.pid + 1  # another process on this host...
    assert a.take("x") and not a.take("x")  # held: not twice, not even by its holder
    assert not b.take("x")  # ... refused while the holder lives
    a.release("x")
    assert b.take("x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "y.claim").write_text(json.dumps({"host": a.host, "pid": dead.pid}))
    assert a.take("y")  # its holder is gone: taken over
    far = Claims(tmp_path, grace_s=0.0)
    (tmp_path / "z.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert far.take("z")  # another host's claim without a heartbeat for grace_s
    assert not Claims(tmp_path).take("z")
