"""Careless or hostile input through the CLI: one clear line, a non-zero exit, no traceback,
nothing written outside the expected folder, nothing the user made replaced."""
import json
import os
import socket
import textwrap

import numpy as np
import pytest
from PIL import Image

from nas_attn.arch import UNetArch

TINY = """
macro: {depth: [1], base_width: [4]}
training: {batch_size: 4, lr: 0.005}
budget: {epochs: 1, samples_per_epoch: 4}
data: {source: builtin, builtin_n: 6, builtin_size: 24}
search: {trials: 1, baselines: false}
"""


def one_error(code, out, *words):
    assert code != 0, out
    assert "Traceback" not in out, out
    low = " ".join(out.split()).lower()
    for w in words:
        assert w.lower() in low, (w, out)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def folder(root, n=3, make=None):
    rng = np.random.default_rng(0)
    for i in range(n):
        m = np.zeros((16, 16), np.uint8)
        m[2:8, 2:8] = 1
        img = make(i) if make else (m * 90 + rng.integers(0, 30, m.shape)).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        if isinstance(img, np.ndarray) and img.dtype.kind == "f":
            np.save(root / "images" / f"s{i}.npy", img)
        else:
            Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray(m * 255).save(root / "masks" / f"s{i}.png")
    return root


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs_study", "a/b", ".."])
def test_study_name_cannot_escape_runs(tmp_path, cli, name):
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    work = tmp_path / "work"
    runs = work / "runs"
    runs.mkdir(parents=True)
    before = tree(tmp_path)
    code, out = cli("search", "--space", space, "--study", name, "--runs-dir", runs)
    one_error(code, out, "study name")
    assert [p for p in tree(tmp_path) if p not in before and not p.startswith("work/runs")] == []
    assert not os.path.exists("/tmp/abs_study/trial_0000")


def test_export_and_train_never_replace_user_files(tmp_path, cli):
    arch = tmp_path / "arch.json"
    arch.write_text(UNetArch(depth=1, widths=(4, 8)).to_json())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.py").write_text("# my own model\n")
    # train into a folder holding the user's files: refused before any training
    code, out = cli("train", "--arch", arch, "--out", mine, "--epochs", "1")
    one_error(code, out, "already holds", "--force")
    assert "epoch" not in out
    assert (mine / "model.py").read_text() == "# my own model\n"
    a_file = tmp_path / "out.txt"
    a_file.write_text("keep")
    code, out = cli("train", "--arch", arch, "--out", a_file, "--epochs", "1")
    one_error(code, out, "is a file")
    assert a_file.read_text() == "keep"


def test_export_into_foreign_folder_is_refused(tmp_path):
    from nas_attn.errors import NasAttnError
    from nas_attn.export import export_arch

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.py").write_text("# my own model\n")
    arch = UNetArch(depth=1, widths=(4, 8))
    with pytest.raises(NasAttnError, match="already holds"):
        export_arch(arch, mine)
    assert (mine / "model.py").read_text() == "# my own model\n"
    out = tmp_path / "fresh"
    export_arch(arch, out)
    export_arch(arch, out)  # its own earlier export may be replaced
    assert "def build_model" in (out / "model.py").read_text()
    export_arch(arch, mine, force=True)
    assert "def build_model" in (mine / "model.py").read_text()


def test_bad_numbers_are_reported_not_zeroed(tmp_path, cli):
    def nan_some(i):
        x = np.random.default_rng(i).random((16, 16))
        x[0, 0] = np.nan
        return x
    root = folder(tmp_path / "nan", make=nan_some)
    code, out = cli("data", "check", root)
    assert code == 0 and "NaN/inf" in out and "s0.npy" in out

    root = folder(tmp_path / "allnan", make=lambda i: np.full((16, 16), np.nan))
    code, out = cli("data", "check", root)
    one_error(code, out, "no finite value", "s0.npy")

    from nas_attn.data.readers import normalise
    huge = np.random.default_rng(0).random((1, 16, 16)) * 1e300
    out = normalise(huge)
    assert out.max() == 1.0 and out.min() == 0.0 and np.isfinite(out).all()


def test_data_check_and_search_agree_on_one_image(tmp_path, cli):
    root = folder(tmp_path / "one", n=1)
    code, out = cli("data", "check", root)
    one_error(code, out, "need at least 2")


def test_symlink_loop_in_data_folder(tmp_path, cli):
    root = folder(tmp_path / "ds")
    os.symlink("loop.png", root / "images" / "loop.png")
    code, out = cli("data", "check", root)
    one_error(code, out, "loop.png")


def test_boolean_widths_in_arch_json(tmp_path, cli):
    d = json.loads(UNetArch(depth=1, widths=(4, 8)).to_json())
    d["widths"] = [True, 8]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(d))
    code, out = cli("train", "--arch", p, "--out", tmp_path / "o")
    one_error(code, out, "widths", "a.json")


@pytest.mark.parametrize("content", [b"garbage\n", b'{"a": 1}\n', b"no newline"])
def test_a_file_that_is_not_a_journal_is_refused_and_kept(tmp_path, cli, content):
    # optuna's reader defers the error of a bad last line: a one-line text file passed its
    # read, got a record appended, and failed with a JSONDecodeError traceback
    f = tmp_path / "notes.txt"
    f.write_bytes(content)
    code, out = cli("search", "--space", "smoke", "--trials", "1", "--storage", f"journal:{f}",
                    "--runs-dir", tmp_path / "runs")
    one_error(code, out, "not an Optuna journal file", "notes.txt")
    assert f.read_bytes() == content


@pytest.mark.parametrize("url,words", [("journal:", ["give the journal file's path"]),
                                       ("journal:{tmp}", ["is a folder"])])
def test_empty_or_folder_journal_path(tmp_path, cli, url, words):
    code, out = cli("search", "--space", "smoke", "--trials", "1", "--storage",
                    url.format(tmp=tmp_path), "--runs-dir", tmp_path / "runs")
    one_error(code, out, *words)


def test_runs_dir_on_a_read_only_file_system(tmp_path, cli, tmpfs):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mnt:
        code, out = cli("search", "--space", "smoke", "--trials", "1", "--runs-dir",
                        mnt / "runs")
        one_error(code, out, "--runs-dir", "read-only file system")
        assert list(mnt.iterdir()) == []


def test_show_and_dashboard_on_missing_runs_create_nothing(tmp_path, cli):
    runs = tmp_path / "nothing"
    for cmd in (["show"], ["dashboard"], ["export"], ["finalize"]):
        code, out = cli(*cmd, "--runs-dir", runs)
        one_error(code, out, "does not exist")
    assert not runs.exists()


def test_dashboard_port_taken_or_out_of_range(tmp_path, cli):
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", space, "--study", "d", "--runs-dir", runs)
    assert code == 0, out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out = cli("dashboard", "--runs-dir", runs, "--port", port)
        one_error(code, out, f"127.0.0.1:{port}", "another --port")
    code, out = cli("dashboard", "--runs-dir", runs, "--port", 70000)
    one_error(code, out, "--port")
    code, out = cli("dashboard", "--runs-dir", runs, "--host", "no.such.host.invalid")
    one_error(code, out, "--host")


@pytest.mark.parametrize("flag,value", [("--trials", -2), ("--timeout", -5)])
def test_negative_budgets_are_refused(tmp_path, cli, flag, value):
    code, out = cli("search", "--space", "smoke", flag, value, "--runs-dir",
                    tmp_path / "runs")
    one_error(code, out, flag)
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_exits_130_and_the_interrupted_baseline_reruns(tmp_path, cli, monkeypatch):
    import optuna

    import nas_attn.train as T

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY).replace("baselines: false", "baselines: true"))
    runs = tmp_path / "runs"
    real = T.train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    code, out = cli("search", "--space", space, "--study", "c", "--runs-dir", runs)
    assert code == 130 and "Traceback" not in out and "interrupted" in out
    # the hint resumes this study, not a new one in the default runs folder
    assert f"resume with `nas-attn search --study c --runs-dir {runs}`" in " ".join(out.split())
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'nas_attn.db'}")
    (t0,) = [t for t in optuna.load_study(study_name="c", storage=storage).trials
             if t.state != optuna.trial.TrialState.WAITING]
    assert t0.state == optuna.trial.TrialState.FAIL and t0.user_attrs["baseline"] == "plain_unet"

    monkeypatch.setattr(T, "train", real)
    code, out = cli("search", "--space", space, "--study", "c", "--runs-dir", runs,
                    "--trials", "1")
    assert code == 0, out
    done = [t for t in optuna.load_study(study_name="c", storage=storage).trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.user_attrs.get("baseline") for t in done] == ["plain_unet"]


def test_a_search_whose_every_trial_failed_exits_nonzero(tmp_path, cli, monkeypatch):
    import nas_attn.train as T
    from nas_attn.errors import DivergedError

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))

    def diverged(*a, **k):
        raise DivergedError("loss became nan at epoch 1")

    monkeypatch.setattr(T, "train", diverged)
    code, out = cli("search", "--space", space, "--study", "f", "--runs-dir",
                    tmp_path / "runs", "--trials", "2")
    one_error(code, out, "all 2 trial(s) of this search failed", "nan")


def test_two_searches_starting_together_on_a_new_sqlite_file(tmp_path):
    import subprocess
    import sys

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    runs = tmp_path / "runs"
    procs = [subprocess.Popen([sys.executable, "-m", "nas_attn.cli", "search", "--space",
                               str(space), "--study", name, "--runs-dir", str(runs), "--trials",
                               "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"})
             for name in ("one", "two")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "Traceback" not in out and "ran 1 trial(s) in this session" in out, out


def test_a_storage_password_is_never_printed(tmp_path, cli):
    """An unreachable PostgreSQL URL with a password: the error names the storage as
    user:***@host, for the command and for the library's message."""
    from nas_attn.errors import StudyError
    from nas_attn.search.study import open_storage, redact

    url = "postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:9/db"
    assert redact(url) == "postgresql+psycopg://alice:***@127.0.0.1:9/db"
    assert redact("journal:runs/x.journal") == "journal:runs/x.journal"
    with pytest.raises(StudyError) as e:
        open_storage(url, tmp_path)
    assert "s3cr3t-pw" not in str(e.value) and "alice:***@127.0.0.1" in str(e.value)
    code, out = cli("search", "--space", "smoke", "--storage", url, "--runs-dir", tmp_path,
                    "--trials", "1")
    assert code != 0 and "s3cr3t-pw" not in out and "***" in out, out


def test_data_check_escapes_control_characters_in_file_names(tmp_path, cli):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "evil\x1b[2J\x07.png").write_bytes(b"not a png")
    code, out = cli("data", "check", root)
    assert code == 1
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07.png" in out


def test_a_stored_study_name_cannot_place_outputs_outside_the_runs_folder(tmp_path, cli):
    """Anyone who can write to a shared storage can name a study `../../x`: `export` builds its
    default folder from that name as from untrusted text."""
    import optuna

    from nas_attn.arch import UNetArch
    from nas_attn.paths import folder_name

    runs = tmp_path / "a" / "b" / "runs"
    runs.mkdir(parents=True)
    study = optuna.create_study(study_name="../../evil", storage=f"sqlite:///{runs}/nas_attn.db")
    study.add_trial(optuna.trial.create_trial(
        value=0.5, params={}, distributions={},
        user_attrs={"arch": UNetArch().to_json(), "arch_summary": "plain"}))
    code, out = cli("export", "../../evil", "--runs-dir", runs)
    assert code == 0, out
    assert (runs / "export" / "evil_trial0" / "model.py").exists()
    assert not list(tmp_path.rglob("evil_trial0*"))[0].relative_to(runs).is_absolute()
    assert not (tmp_path / "a" / "evil_trial0").exists()
    assert folder_name("../../x") == "x" and folder_name("a/../b") == "a___b"
    assert folder_name("..") == "model" and folder_name("my study_1") == "my_study_1"


def test_a_test_folder_that_does_not_exist_is_refused_when_the_search_starts(tmp_path, cli):
    code, out = cli("search", "--space", "smoke", "--runs-dir", tmp_path, "--trials", "1",
                    "--test-data", tmp_path / "nowhere")
    assert code != 0 and "--test-data" in out and "nowhere" in out and "not found" in out, out
    assert "Traceback" not in out
    db = tmp_path / "nas_attn.db"
    if db.exists():  # no study was created for a search that cannot be finalized
        import optuna

        assert optuna.get_all_study_names(f"sqlite:///{db}") == []


def _exported(tmp_path):
    from nas_attn.export import export_arch
    from nas_attn.unet import build_unet

    arch = UNetArch(depth=1, widths=(4, 8))
    out = tmp_path / "model"
    export_arch(arch, out, weights=build_unet(arch).state_dict())
    return out


def test_predict_never_writes_over_its_inputs(tmp_path, cli):
    data = folder(tmp_path / "data")
    model = _exported(tmp_path)
    before = {p: p.read_bytes() for p in data.rglob("*.png")}
    images = data / "images"
    for args in (["--force"], []):  # the masks would be the input images themselves
        code, out = cli("predict", images, "--model", model, "--out", images, *args)
        one_error(code, out, "would replace the input image", "s0.png")
    # the masks/ folder of an input data set is its ground truth
    code, out = cli("predict", data, "--model", model, "--out", data / "masks", "--force")
    one_error(code, out, "masks/ folder", "ground truth")
    assert {p: p.read_bytes() for p in data.rglob("*.png")} == before
    # --out an existing file: one line, not one error per image
    a_file = tmp_path / "a.txt"
    a_file.write_text("keep")
    code, out = cli("predict", images, "--model", model, "--out", a_file)
    one_error(code, out, "existing file")
    assert out.count("error") == 1 and a_file.read_text() == "keep"
    code, out = cli("predict", images, "--model", model, "--out", tmp_path / "pred")
    assert code == 0 and len(list((tmp_path / "pred").iterdir())) == 3, out


def test_evaluate_json_never_replaces_a_file_unasked(tmp_path, cli):
    data = folder(tmp_path / "data")
    model = _exported(tmp_path)
    scores = tmp_path / "scores.json"
    scores.write_text("mine")
    code, out = cli("evaluate", "--model", model, "--data", data, "--json", scores)
    one_error(code, out, "scores.json", "exists", "--force")
    assert scores.read_text() == "mine" and "Dice" not in out  # refused before any work
    code, out = cli("evaluate", "--model", model, "--data", data, "--json", tmp_path)
    one_error(code, out, "is a folder")
    code, out = cli("evaluate", "--model", model, "--data", data, "--json", scores, "--force")
    assert code == 0 and json.loads(scores.read_text())["images"] == 3, out


def test_reexport_refuses_an_edited_or_added_file(tmp_path):
    from nas_attn.errors import NasAttnError
    from nas_attn.export import export_arch

    arch = UNetArch(depth=1, widths=(4, 8))
    out = tmp_path / "exp"
    export_arch(arch, out)
    export_arch(arch, out)  # unchanged: its own earlier export may be replaced
    (out / "model.py").write_text((out / "model.py").read_text() + "# my edit\n")
    with pytest.raises(NasAttnError, match="'model.py' was changed"):
        export_arch(arch, out)
    assert (out / "model.py").read_text().endswith("# my edit\n")
    export_arch(arch, out, force=True)  # asked for
    (out / "notes.txt").write_text("mine")
    with pytest.raises(NasAttnError, match="holds 'notes.txt'"):
        export_arch(arch, out)
    assert (out / "notes.txt").read_text() == "mine"
