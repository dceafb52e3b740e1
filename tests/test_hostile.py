"""Careless or hostile input through the CLI: one clear line, a non-zero exit, no traceback,
nothing written outside the expected folder, nothing the user made replaced."""
import json
import os
import socket
import textwrap

import numpy as np
import pytest
from PIL import Image

from nas_attn.architecture.description import UNetArch

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
    from nas_attn.exporting import export_arch

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
    # a search on it says so in its opening lines
    space = tmp_path / "tiny.yaml"
    space.write_text(textwrap.dedent(TINY))
    code, out = cli("search", "--space", space, "--data", root, "--runs-dir", tmp_path / "r")
    assert code == 0 and "hold NaN/inf values" in " ".join(out.split()), out
    arch = tmp_path / "a.json"
    arch.write_text(UNetArch(depth=1, widths=(4, 8)).to_json())
    code, out = cli("train", "--arch", arch, "--data", root, "--epochs", "1",
                    "--out", tmp_path / "t")
    assert code == 0 and "hold NaN/inf values" in " ".join(out.split()), out
    # predict says so too, per image (the mask there is a guess)
    code, out = cli("predict", root / "images" / "s0.npy", "--model", _exported(tmp_path),
                    "--out", tmp_path / "masks")
    assert code == 0 and "NaN/inf" in out and "s0.npy" in out, out

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
    one_error(code, out, "loop.png", "symbolic link loop")
    # a mask that is a loop of two links is named as such, not as a missing mask
    os.remove(root / "images" / "loop.png")
    mask = sorted((root / "masks").iterdir())[0]
    mask.unlink()
    os.symlink(mask.name + ".b.png", mask)
    os.symlink(mask.name, root / "masks" / (mask.name + ".b.png"))
    code, out = cli("data", "check", root)
    assert code != 0 and "symbolic link loop" in out and mask.name in out, out


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

    import nas_attn.training as T

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
    import nas_attn.training as T
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
    from nas_attn.searching.study import open_storage, redact

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

    from nas_attn.architecture.description import UNetArch
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
    from nas_attn.exporting import export_arch
    from nas_attn.architecture.builder import build_unet

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
    from nas_attn.exporting import export_arch

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


def test_a_resume_fails_the_trial_of_a_killed_search_at_once(tmp_path, cli):
    """kill -9 on SQLite: the dead process's RUNNING trial is failed (with why) and retried by
    the next search on this machine without waiting for the heartbeat's grace period, and its
    partial score never counts as a baseline."""
    import socket
    import subprocess
    import sys

    import optuna

    from nas_attn.searching.report import baseline_gains, completed_baselines

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", space, "--study", "k", "--runs-dir", runs)
    assert code == 0, out
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'nas_attn.db'}")
    study = optuna.load_study(study_name="k", storage=storage)
    (done,) = study.trials
    assert done.user_attrs["worker"] == f"{socket.gethostname()}:{os.getpid()}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()  # what a search killed mid-trial leaves: RUNNING, a partial curve
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    trial.set_user_attr("baseline", "attention_unet")
    trial.set_user_attr("arch", done.user_attrs["arch"])
    trial.set_user_attr("curve", [{"epoch": 1, "dice": 0.01}])
    assert baseline_gains(study) == []  # a partial score is no baseline
    code, out = cli("search", "--space", space, "--study", "k", "--runs-dir", runs,
                    "--trials", "1", "--grace-period", "3600")
    assert code == 0, out
    trials = optuna.load_study(study_name="k", storage=storage).trials
    killed = trials[trial.number]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert f":{dead.pid} is gone" in killed.user_attrs["fail_reason"]
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].user_attrs.get("retry_of") == trial.number
    assert list(completed_baselines(optuna.load_study(study_name="k", storage=storage))) \
        == ["attention_unet"]


def test_a_study_is_resumed_only_on_its_own_data(tmp_path, cli):
    import optuna

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY).replace("data: {source: builtin, builtin_n: 6, "
                                                   "builtin_size: 24}\n", ""))
    a = folder(tmp_path / "a", n=4)
    b = folder(tmp_path / "b", n=4, make=lambda i: np.full((16, 16), 7 * i, np.uint8))
    (b / "masks" / "s3.png").unlink()  # b: other labels; also one sample fewer
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(b / "masks" / "s3.png")
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", space, "--data", a, "--study", "d", "--runs-dir", runs)
    assert code == 0, out
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'nas_attn.db'}")
    ident = optuna.load_study(study_name="d", storage=storage).user_attrs["data_identity"]
    assert ident["classes"] == 2 and ident["train"] + ident["val"] == 4
    code, out = cli("search", "--space", space, "--data", b, "--study", "d", "--runs-dir", runs)
    one_error(code, out, "study 'd' was run on", str(a), "other samples or labels",
              "--force-data")
    assert len(optuna.load_study(study_name="d", storage=storage).trials) == 1
    code, out = cli("search", "--space", space, "--study", "d", "--runs-dir", runs)
    assert code == 0, out  # its own data (recorded with the study)
    code, out = cli("search", "--space", space, "--data", b, "--study", "d", "--runs-dir", runs,
                    "--force-data")
    assert code == 0 and "--force-data" in out, out
    study = optuna.load_study(study_name="d", storage=storage)
    assert len(study.trials) == 3 and study.user_attrs["data_identity"]["source"] == str(b)


@pytest.mark.parametrize("text, words", [
    ("macro: {depth: [7], base_width: [4096], max_width: 4096}\n", ["smallest candidate",
                                                                    "needs at least", "GB"]),
    ("data: {source: builtin, builtin_size: 100000}\n", ["builtin_size must be 16..2048"]),
    ("data: {source: builtin, builtin_n: 100000000}\n", ["builtin_n must be 2..100000"]),
    ("data: {source: builtin3d, builtin_n: 64, builtin_size: 512}\n", ["at most", "voxels"]),
    ("macro: {base_width: [100000]}\n", ["base_width 100000", "max_width"]),
    ("macro: {depth: []}\n", ["macro.depth: empty list"]),
    ("bottleneck: {choices: [self]}\noptions: {self: {heads: {low: 1, high: 1000000000}}}\n",
     ["'heads' of 'self' must be 1..64"]),
])
def test_sizes_are_checked_before_anything_is_allocated(tmp_path, cli, text, words):
    space = tmp_path / "s.yaml"
    space.write_text(text + "budget: {epochs: 1, samples_per_epoch: 2}\n")
    code, out = cli("search", "--space", space, "--study", "x", "--runs-dir", tmp_path / "r")
    one_error(code, out, *words)
    assert "Value error" not in out and "Traceback" not in out
    assert not (tmp_path / "r" / "x").exists()


def test_space_files_are_read_with_a_size_limit_and_as_utf8(tmp_path, cli):
    code, out = cli("spaces", "check", "/dev/zero")
    one_error(code, out, "/dev/zero", "not a regular file")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    code, out = cli("spaces", "check", big)
    one_error(code, out, "larger than 1 MiB")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# Espa\xf1a\nmacro: {depth: [2]}\n".encode("latin-1"))
    code, out = cli("spaces", "check", latin)
    one_error(code, out, "not UTF-8", "0xf1")


def test_architectures_are_bounded(tmp_path):
    from nas_attn.errors import ArchError
    from nas_attn.architecture.footprint import estimate
    from nas_attn.architecture.builder import build_unet

    for kw in ({"classes": 10 ** 9}, {"in_channels": 10 ** 6}, {"aux_channels": 10 ** 6}):
        with pytest.raises(ArchError, match="must be an integer"):
            UNetArch(**kw)
    # the estimate is a lower bound of what the model really holds
    arch = UNetArch(depth=3, widths=(8, 16, 32, 64), classes=5)
    real = sum(p.numel() for p in build_unet(arch).parameters())
    assert 0.9 * real <= estimate(arch, (64, 64)).params <= real


def test_a_training_that_cannot_fit_is_refused_before_allocating(tmp_path, cli):
    arch = tmp_path / "a.json"
    arch.write_text(UNetArch(depth=7, widths=(4096,) * 8).to_json())
    code, out = cli("train", "--arch", arch, "--data", folder(tmp_path / "d", n=2),
                    "--epochs", "1", "--out", tmp_path / "o")
    one_error(code, out, "needs at least", "more than all of cpu")


def _interrupt(cmd, delays, env=None):
    """Run `cmd`, send SIGINT after each delay (seconds from the start): exit code, stderr."""
    import signal
    import subprocess
    import time

    # SIGINT as a terminal's Ctrl-C finds it: a suite started in the background (`cmd &`
    # without job control) hands its children SIGINT ignored, and Python keeps it so
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200", **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    for d in delays:
        time.sleep(max(0.0, t0 + d - time.monotonic()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.parametrize("after", [0.05, 0.2, 1.0])
def test_ctrl_c_while_the_command_is_starting(tmp_path, after):
    """What the `nas-attn` script does, with SIGINT soon after its entry point is called:
    it lands in the imports (typer, optuna, torch: seconds on a loaded machine)."""
    import sys

    script = ("import os, signal, sys, threading\n"
              "from nas_attn.cli import main\n"
              f"threading.Timer({after}, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
              "main()\n")  # the process's own command line, as the console script does
    code, err = _interrupt([sys.executable, "-c", script, "search", "--space", "smoke",
                            "--runs-dir", str(tmp_path / "r")], [])
    assert code == 130, err
    assert "Traceback" not in err and "interrupted" in err, err


def test_dashboard_stops_on_ctrl_c_whatever_it_was_doing(tmp_path, cli, monkeypatch):
    """The server runs off the main thread, so Ctrl-C (always delivered to the main thread)
    cannot be swallowed by a request's error handler and leave the server running."""
    import signal
    import threading
    import time

    import optuna_dashboard

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    runs = tmp_path / "runs"
    assert cli("search", "--space", space, "--study", "d", "--runs-dir", runs)[0] == 0
    where = []

    def serve(*a, **k):  # a server busy with a request that never ends
        where.append(threading.current_thread())
        while True:
            time.sleep(0.05)

    monkeypatch.setattr(optuna_dashboard, "run_server", serve)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code, out = cli("dashboard", "--runs-dir", runs, "--port", port)
    finally:
        timer.cancel()
    assert code == 0 and "dashboard stopped" in out, out
    assert where and where[0] is not threading.main_thread()


@pytest.mark.parametrize("call, words", [
    (lambda na: na.build_unet({"depth": 2}), ["needs a UNetArch", "dict"]),
    (lambda na: na.search(123), ["space must be", "int 123"]),
    (lambda na: na.search("smoke", trials=0), ["trials must be an integer >= 1"]),
    (lambda na: na.search("smoke", force_data="yes"), ["force_data must be True or False"]),
    (lambda na: na.finalize(5), ["study must be an optuna Study or the name"]),
    (lambda na: na.finalize("s", top=0), ["top must be an integer >= 1"]),
    (lambda na: na.predict("m", "nowhere.png", "out"), ["nowhere.png", "no such file"]),
    (lambda na: na.predict("m", [], "out"), ["inputs must be a path or a non-empty list"]),
    (lambda na: na.evaluate("m", 3), ["data must be a dataset folder"]),
    (lambda na: na.search("smoke", timeout=-5), ["timeout must be"]),
    (lambda na: na.search("smoke", study=7), ["study must be a string"]),
    (lambda na: na.export(None), ["source must be"]),
    (lambda na: na.train({"depth": 1}), ["arch must be a UNetArch", "from_dict"]),
    (lambda na: na.train(epochs="3"), ["epochs must be an integer"]),
    (lambda na: na.load_model(None), ["path must be"]),
    (lambda na: na.UNetArch(classes=0), ["classes must be an integer 2..256"]),
    (lambda na: na.UNetArch(classes=10 ** 9), ["classes must be"]),
    (lambda na: na.UNetArch(in_channels=-3), ["in_channels must be"]),
    (lambda na: na.UNetArch(in_channels="3"), ["in_channels must be"]),
    (lambda na: na.UNetArch(spatial_dims=4), ["spatial_dims must be 2 or 3"]),
])
def test_the_python_api_checks_its_arguments(tmp_path, monkeypatch, call, words):
    import nas_attn as na

    monkeypatch.chdir(tmp_path)  # nothing may be created: a study, a runs folder
    with pytest.raises(na.NasAttnError) as e:
        call(na)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_unclear_messages_made_clear(tmp_path, cli, monkeypatch):
    import errno
    import socket as socket_mod

    from nas_attn.data.readers import classify_mask

    # masks with ids 0..299: too many classes, not "255 next to other values"
    _, problem = classify_mask(np.arange(300))
    assert "ids up to 299" in problem and "255 next to" not in problem
    # a broken symbolic link is not a missing mask
    data = folder(tmp_path / "d")
    (data / "masks" / "s0.png").unlink()
    (data / "masks" / "s0.png").symlink_to(tmp_path / "nowhere.png")
    code, out = cli("data", "check", data)
    assert code != 0 and "broken symbolic link" in out, out
    # a privileged port is a matter of rights, not another program
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    runs = tmp_path / "runs"
    assert cli("search", "--space", space, "--study", "u", "--runs-dir", runs)[0] == 0

    def refuse(self, addr):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket_mod.socket, "bind", refuse)
    code, out = cli("dashboard", "--runs-dir", runs, "--port", 80)
    one_error(code, out, "administrator rights", "8080")
    assert "another program" not in out
    monkeypatch.undo()
    # the same space file, edited since: named as changed, not as another file
    space.write_text(textwrap.dedent(TINY).replace("lr: 0.005", "lr: 0.004"))
    code, out = cli("search", "--space", space, "--study", "u", "--runs-dir", runs)
    one_error(code, out, "the file changed since study 'u' was created")


def test_damaged_files_are_named_and_called_damaged(tmp_path, cli):
    from nas_attn.exporting import export_arch
    from nas_attn.architecture.builder import build_unet

    arch = UNetArch(depth=1, widths=(4, 8))
    data = folder(tmp_path / "d")
    model = tmp_path / "m"
    export_arch(arch, model, weights=build_unet(arch).state_dict())
    good = (model / "weights.pt").read_bytes()
    for content, words in ((good[:100], "truncated"), (os.urandom(3000), "damaged")):
        (model / "weights.pt").write_bytes(content)
        code, out = cli("predict", data / "images", "--model", model, "--force", "--out",
                        tmp_path / "p")
        one_error(code, out, str(model / "weights.pt"), words)
        assert "weights_only" not in out  # torch's advice to load unsafely is not repeated
    # a corrupt SQLite study database is called corrupt
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "nas_attn.db").write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    code, out = cli("show", "--runs-dir", runs)
    one_error(code, out, "is corrupt", "restore it from a copy")
    # an architecture JSON nested 100,000 deep
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, out = cli("train", "--arch", deep, "--out", tmp_path / "o")
    one_error(code, out, "nested too deeply")


def test_a_journal_record_optuna_cannot_replay(tmp_path, cli):
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    journal = tmp_path / "j.log"
    url = f"journal:{journal}"
    assert cli("search", "--space", space, "--study", "j", "--storage", url,
               "--runs-dir", tmp_path / "r")[0] == 0
    lines = journal.read_text().splitlines()
    record = json.loads(lines[-1])
    record["op_code"] = 99
    journal.write_text("\n".join(lines + [json.dumps(record)]) + "\n")
    before = journal.read_bytes()
    code, out = cli("show", "j", "--storage", url, "--runs-dir", tmp_path / "r")
    one_error(code, out, f"line {len(lines) + 1} holds op_code 99", "cannot replay")
    assert journal.read_bytes() == before


def test_a_one_pixel_wide_image_trains(tmp_path, cli):
    """A flip of a 1-pixel-wide patch has a negative stride numpy calls contiguous: the
    trial used to fail with no reason and the search stopped with a traceback."""
    def strip(i):
        return (np.random.default_rng(i).random((1, 32)) * 255).astype(np.uint8)
    root = tmp_path / "strip"
    for i in range(4):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip(i)).save(root / "images" / f"s{i}.png")
        m = np.zeros((1, 32), np.uint8)
        m[0, 3:9] = 255
        Image.fromarray(m).save(root / "masks" / f"s{i}.png")
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY).replace("macro: {depth: [1], base_width: [4]}",
                                                   "macro: {depth: [3], base_width: [4]}")
                     .replace("data: {source: builtin, builtin_n: 6, builtin_size: 24}\n", ""))
    code, out = cli("search", "--space", space, "--data", root, "--study", "w",
                    "--runs-dir", tmp_path / "r", "--trials", "2")
    assert code == 0 and "Traceback" not in out, out


def test_one_message_per_field_for_a_union(tmp_path, cli):
    space = tmp_path / "s.yaml"
    space.write_text("training: {lr: {low: abc, high: 0.1}}\n")
    code, out = cli("spaces", "check", space)
    one_error(code, out, "training.lr.low: Input should be a valid number")
    assert out.count(";") == 0 and "function-after" not in out and "list[" not in out, out


def test_export_of_a_failed_trial_uses_the_checkpoint_it_left(tmp_path, cli, monkeypatch):
    """A trial that failed after its first epoch has a best.pt on disk: export uses it and
    says so, instead of random weights with a note that no checkpoint was kept."""
    import nas_attn.training as T
    from nas_attn.errors import TrainingError

    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY).replace("epochs: 1", "epochs: 3"))
    real = T.train

    def dies_after_an_epoch(*a, **k):
        on_epoch = k.get("on_epoch")

        def then_fail(epoch, metrics):
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if epoch >= 2:
                raise TrainingError("a failure after the second epoch")
        return real(*a, **{**k, "on_epoch": then_fail})

    monkeypatch.setattr(T, "train", dies_after_an_epoch)
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", space, "--study", "f", "--runs-dir", runs)
    assert code != 0 and (runs / "f" / "trial_0000" / "best.pt").is_file(), out
    code, out = cli("export", "f", "--trial", "0", "--runs-dir", runs, "--out", tmp_path / "e")
    assert code == 0, out
    assert "best epoch before it stopped" in " ".join(out.split()) and "fresh weights" not in out
    assert (tmp_path / "e" / "weights.pt").is_file()
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert "kept on disk" in meta["weights_note"]


def test_an_interrupt_inside_a_storage_write_is_an_interrupt_not_a_storage_failure():
    """optuna wraps a KeyboardInterrupt raised inside SQLAlchemy in a StorageInternalError;
    Ctrl-C / SIGTERM during a write must still end as an interruption (exit 130)."""
    import optuna

    from nas_attn.searching.study import storage_errors

    with pytest.raises(KeyboardInterrupt):
        with storage_errors("sqlite:///x.db"):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise optuna.exceptions.StorageInternalError("An exception is raised "
                                                             "during the commit.") from e


def test_spaces_check_refuses_a_space_whose_smallest_candidate_cannot_fit(tmp_path, cli):
    space = tmp_path / "huge.yaml"
    space.write_text("# huge\nspatial_dims: 2\nmacro: {depth: 4, base_width: 2048, "
                     "max_width: 4096}\ndata: {patch_size: [2048, 2048]}\n")
    code, out = cli("spaces", "check", space)
    one_error(code, out, "huge.yaml", "smallest candidate", "GB")
    from nas_attn.searching.cost import smallest_fits
    from nas_attn.searching.space_files import load_space

    assert smallest_fits(load_space("default")) is None
    assert smallest_fits(load_space("default"), total_bytes=1e6) is not None  # 1 MB machine


def test_a_journal_whose_last_record_is_cut_off_says_so(tmp_path, cli):
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(TINY))
    journal = tmp_path / "j.log"
    url = f"journal:{journal}"
    assert cli("search", "--space", space, "--study", "j", "--storage", url,
               "--runs-dir", tmp_path / "r")[0] == 0
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-20])  # a writer killed in the middle of its last record
    before = journal.read_bytes()
    code, out = cli("show", "j", "--storage", url, "--runs-dir", tmp_path / "r")
    assert code == 0 and "Traceback" not in out, out
    assert "last record is cut off" in " ".join(out.split()) and "j.log" in out, out
    assert journal.read_bytes() == before  # show reads; it never repairs behind the user's back
