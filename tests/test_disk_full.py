"""A full disk (issue 11, case 3) through the CLI: one line naming what could not be written,
exit code 1, no traceback, nothing half-written, nothing the user had replaced, the study
database intact and no trial left RUNNING where it could be recorded.

Two kinds of tests: ENOSPC injected at the writes that matter (run everywhere), and the same
commands on a real, nearly full tmpfs (`mount -t tmpfs`; skipped where mounting is not
allowed, e.g. CI without root)."""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image

from nas_attn.architecture.description import UNetArch

ROOT = Path(__file__).resolve().parents[1]
FULL = "no space left on device"


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def full_torch_save(monkeypatch, after: int = 0):
    """`torch.save` that writes some bytes, then fails as on a full disk (after `after` calls
    that work)."""
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(obj, f, *a, **k)
        if hasattr(f, "write"):
            f.write(b"half a checkpoint" * 100)
        enospc()

    monkeypatch.setattr(torch, "save", save)
    return calls


def leftovers(root: Path) -> list[str]:
    """Temporary files of atomic writes (`.NAME.XXXX.tmp`) anywhere under root."""
    return sorted(str(p) for p in Path(root).rglob("*.tmp"))


def trials_of(db: Path, study: str):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


@pytest.fixture
def space_file(tmp_path, tiny_space):
    """`space_file(trials=3)`: the shared tiny space, without baselines, `trials` a search."""
    line = "search: {trials: 2, n_startup_trials: 1}"
    assert line in tiny_space

    def write(trials: int = 3) -> Path:
        p = tmp_path / f"space{trials}.yaml"
        p.write_text(textwrap.dedent(tiny_space).replace(
            line, f"search: {{trials: {trials}, n_startup_trials: 1, baselines: false}}"))
        return p

    return write


def full_disk_line(code, out, *words):
    """The command failed as it must on a full disk: exit code 1, one error line, which says
    "no space left on device" and each of `words`, and no traceback."""
    assert code == 1, out
    assert "Traceback" not in out, out
    said = " ".join(out.split())
    assert said.count("error:") == 1 and f"error: {FULL}" in said, out
    for w in words:
        assert w in said, (w, out)


# --------------------------------------------------------------------------------------------
# atomic writes
def test_atomic_files_get_the_mode_open_would_give(tmp_path):
    from nas_attn.atomic import atomic_write
    from nas_attn.training.checkpoint import atomic_torch_save

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", "{}")
        atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "w.pt")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        assert modes == {"a.json": 0o644, "w.pt": 0o644, "plain.txt": 0o644}
        os.umask(0o077)
        atomic_write(tmp_path / "private.json", "{}")
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
        os.chmod(tmp_path / "a.json", 0o640)  # a replaced file keeps its mode, as with open()
        atomic_write(tmp_path / "a.json", "[]")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_enospc_keeps_the_old_file_and_removes_the_partial_one(tmp_path, monkeypatch):
    from nas_attn.atomic import atomic_save, atomic_write
    from nas_attn.errors import DiskFullError
    from nas_attn.training.checkpoint import atomic_torch_save

    target = tmp_path / "best.pt"
    atomic_write(target, b"the good checkpoint")

    def half(tmp):
        tmp.write_bytes(b"half")
        enospc()

    with pytest.raises(DiskFullError, match=f"^{FULL}: .*best.pt$") as e:
        atomic_save(target, half)
    assert e.value.errno == errno.ENOSPC and e.value.path == str(target)
    full_torch_save(monkeypatch)
    with pytest.raises(DiskFullError, match="best.pt"):
        atomic_torch_save({"x": torch.zeros(3)}, target)
    monkeypatch.setattr(os, "fsync", enospc)  # NFS and delayed allocation: ENOSPC at fsync
    with pytest.raises(DiskFullError, match="best.pt"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"the good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_artifact_store_writes_whole_files(tmp_path, monkeypatch):
    import io
    import shutil

    from nas_attn.errors import DiskFullError
    from nas_attn.searching.artifacts import AtomicArtifactStore

    store = AtomicArtifactStore(tmp_path)

    def copy(src, dst):
        dst.write(src.read(5))
        enospc()

    monkeypatch.setattr(shutil, "copyfileobj", copy)
    with pytest.raises(DiskFullError, match=FULL):
        store.write("a1", io.BytesIO(b"0123456789"))
    assert list(tmp_path.iterdir()) == []  # optuna's own store left a 5-byte artifact


# --------------------------------------------------------------------------------------------
# search: a trial's file write fails
def test_search_stops_when_a_checkpoint_cannot_be_written(tmp_path, cli, monkeypatch,
                                                           space_file):
    runs = tmp_path / "runs"
    space = space_file()
    full_torch_save(monkeypatch)
    code, out = cli("search", "--space", space, "--study", "f", "--runs-dir", runs)
    assert code == 1, out
    full_disk_line(code, out, f"{FULL}: {runs.resolve() / 'f' / 'trial_0000' / 'best.pt'}",
              "trial 0 was recorded as failed",
              f"resume with `nas-attn search --study f --runs-dir {runs}`")
    assert "Should not reach" not in out
    trials = trials_of(runs / "nas_attn.db", "f")
    assert [t.state for t in trials] == [TrialState.FAIL]  # stopped: 1 trial, not 3
    assert trials[0].user_attrs["fail_reason"].startswith(f"{FULL}: ")
    assert leftovers(runs) == []
    monkeypatch.undo()  # space freed: the same study goes on
    code, out = cli("search", "--space", space, "--study", "f", "--runs-dir", runs,
                    "--trials", "1")
    assert code == 0, out
    assert [t.state for t in trials_of(runs / "nas_attn.db", "f")] == \
        [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.parametrize("what", ["preview", "artifact"])
def test_search_stops_when_a_picture_or_artifact_cannot_be_written(tmp_path, cli, monkeypatch,
                                                                   what, space_file):
    import shutil

    runs = tmp_path / "runs"
    if what == "preview":  # the first picture of a trial: its validation preview
        monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: enospc())
        where = runs.resolve() / "p" / "trial_0000" / "preview.png"
    else:  # the first artifact copied to the dashboard's store
        monkeypatch.setattr(shutil, "copyfileobj", lambda src, dst, *a: enospc())
        where = runs.resolve() / "artifacts"
    code, out = cli("search", "--space", space_file(), "--study", "p",
                    "--runs-dir", runs)
    full_disk_line(code, out, f"{FULL}: {where}", "trial 0 was recorded as failed")
    assert code == 1
    (t,) = trials_of(runs / "nas_attn.db", "p")
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith(f"{FULL}: ")
    assert leftovers(runs) == []


# --------------------------------------------------------------------------------------------
# search: the storage cannot commit
def _second(a, k, name):
    """The argument after the trial id, given by position or by name."""
    return k.get(name, a[1] if len(a) > 1 else None)


def _failing_commits(monkeypatch, when):
    """Make the study's RDB storage fail as SQLite does on a full disk, for calls `when` picks
    (the method's name, its positional and keyword arguments after self)."""
    from sqlalchemy.exc import OperationalError

    from nas_attn.searching.heartbeat import HeartbeatRDBStorage

    def wrap(name):
        real = getattr(HeartbeatRDBStorage, name)

        def method(self, *a, **k):
            if when(name, a, k):
                full = sqlite3.OperationalError("database or disk is full")
                try:
                    raise OperationalError("COMMIT", {}, full) from full
                except OperationalError as e:
                    raise optuna.exceptions.StorageInternalError(
                        "An exception is raised during the commit.") from e
            return real(self, *a, **k)
        monkeypatch.setattr(HeartbeatRDBStorage, name, method)

    for name in ("set_trial_state_values", "set_trial_user_attr", "set_trial_intermediate_value"):
        wrap(name)


def test_storage_that_cannot_record_the_end_of_a_trial(tmp_path, cli, monkeypatch,
                                                        space_file):
    """optuna 5 turned this into `AssertionError: Should not reach.` with the trial RUNNING."""
    runs = tmp_path / "runs"
    space = space_file()
    done = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    _failing_commits(monkeypatch, lambda name, a, k: name == "set_trial_state_values"
                     and _second(a, k, "state") in done)
    code, out = cli("search", "--space", space, "--study", "s", "--runs-dir", runs,
                    "--heartbeat-interval", "1", "--grace-period", "2")
    db = runs.resolve() / "nas_attn.db"
    full_disk_line(code, out, f"{FULL}: the storage sqlite:///{db} cannot be written (database or "
              "disk is full)", "trial 0 stays RUNNING",
              "a resumed search on this machine fails it")
    assert code == 1 and "Should not reach" not in out
    monkeypatch.undo()
    (t,) = trials_of(db, "s")  # the database opens, the trial is there
    assert t.state == TrialState.RUNNING
    import time

    time.sleep(2.5)  # its heartbeat goes stale (not a timing assertion: a wait)
    code, out = cli("search", "--space", space, "--study", "s", "--runs-dir", runs,
                    "--trials", "1", "--heartbeat-interval", "1", "--grace-period", "2")
    assert code == 0, out
    trials = trials_of(db, "s")
    assert trials[0].state == TrialState.FAIL and "no heartbeat" in \
        trials[0].user_attrs["fail_reason"]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[1].user_attrs.get("retry_of") == 0  # the same configuration, run again


def test_storage_full_mid_trial_records_the_trial_failed(tmp_path, cli, monkeypatch,
                                                         space_file):
    runs = tmp_path / "runs"
    _failing_commits(monkeypatch, lambda name, a, k: name == "set_trial_user_attr"
                     and _second(a, k, "key") == "curve")
    code, out = cli("search", "--space", space_file(), "--study", "m",
                    "--runs-dir", runs)
    full_disk_line(code, out, f"{FULL}: the storage sqlite:///", "trial 0 was recorded as failed")
    assert code == 1
    monkeypatch.undo()
    (t,) = trials_of(runs / "nas_attn.db", "m")
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_reason"].startswith(f"{FULL}: the storage sqlite:///")


def test_storage_full_when_the_search_opens(tmp_path, cli, monkeypatch, space_file):
    from nas_attn.searching import run

    space = space_file()
    runs = tmp_path / "runs"

    def full(*a, **k):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("commit failed") from e

    monkeypatch.setattr(run.optuna.Study, "set_user_attr", full)
    code, out = cli("search", "--space", space, "--study", "o", "--runs-dir", runs)
    full_disk_line(code, out, f"{FULL}: the storage sqlite:///")
    assert code == 1


def test_heartbeat_that_cannot_be_written_is_skipped(tmp_path):
    from nas_attn.searching.heartbeat import rdb_storage

    st = rdb_storage(f"sqlite:///{tmp_path / 'h.db'}")

    def full(*a, **k):
        raise optuna.exceptions.StorageInternalError("database or disk is full")

    st.scoped_session = full  # every session the heartbeat opens fails
    st.record_heartbeat(1)  # no exception: the heartbeat thread must not die with a traceback


def test_optuna_assertion_is_turned_back_into_the_storage_error():
    from nas_attn.errors import DiskFullError, StudyError
    from nas_attn.searching.study import storage_errors

    def tell_failed(text):
        try:
            try:
                raise sqlite3.OperationalError(text)
            except sqlite3.OperationalError as e:
                raise optuna.exceptions.StorageInternalError("commit") from e
        except optuna.exceptions.StorageInternalError:
            assert False, "Should not reach."  # what optuna's _run_trial does

    full = pytest.raises(DiskFullError, match="no space left on device: the storage journal:x")
    with full, storage_errors("journal:x"):
        tell_failed("database or disk is full")
    other = pytest.raises(StudyError, match="the storage journal:x failed: disk I/O error")
    with other, storage_errors("journal:x"):
        tell_failed("disk I/O error")
    with pytest.raises(AssertionError), storage_errors("journal:x"):  # ours passes through
        assert False


# --------------------------------------------------------------------------------------------
# journal files (several workers)
def test_journal_append_that_fails_leaves_no_partial_line(tmp_path, monkeypatch):
    from nas_attn.searching.study import open_storage

    url = f"journal:{tmp_path / 'j.journal'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="j", storage=storage)
    study.set_user_attr("a", 1)
    before = (tmp_path / "j.journal").read_bytes()
    real = os.write

    def half(fd, data):
        real(fd, bytes(data[: len(data) // 2]))
        enospc()

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(OSError):
        study.set_user_attr("b", "x" * 1000)
    monkeypatch.undo()
    assert (tmp_path / "j.journal").read_bytes() == before
    # a fragment left by a writer killed mid-line is dropped by the next append
    with open(tmp_path / "j.journal", "ab") as f:
        f.write(b'{"op_code": 5, "half')
    study.set_user_attr("c", 3)
    again = optuna.load_study(study_name="j", storage=open_storage(url))
    assert again.user_attrs == {"a": 1, "c": 3}


def _sitecustomize(tmp_path, body: str) -> dict:
    """An environment whose Python processes (workers included) run `body` at start-up."""
    d = tmp_path / "inject"
    d.mkdir()
    (d / "sitecustomize.py").write_text(textwrap.dedent(body))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


FULL_TORCH_SAVE = """
    import errno
    import torch

    def save(obj, f, *a, **k):
        f.write(b"half" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.save = save
"""


def test_workers_stop_on_a_full_disk(tmp_path, space_file):
    """Real processes: the parent stops every worker (no restart, no new trial) and prints the
    worker's line; no traceback in the whole output (Optuna's own warnings included)."""
    env = _sitecustomize(tmp_path, FULL_TORCH_SAVE)
    space = space_file(trials=4)
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "nas_attn.cli", "search", "--space", str(space),
                           "--study", "w", "--runs-dir", str(runs), "--workers", "2"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
                          check=False)
    out = proc.stdout + proc.stderr
    full_disk_line(proc.returncode, out, f"{FULL}: ", "trial_000", "the search stopped")
    assert proc.returncode == 1 and "restarted" not in out, out
    from nas_attn.searching.study import open_storage

    study = optuna.load_study(study_name="w", storage=open_storage(
        f"journal:{runs / 'nas_attn.journal'}"))
    states = [t.state for t in study.trials if t.state != TrialState.WAITING]
    assert states and all(s == TrialState.FAIL for s in states), states
    assert all(t.user_attrs["fail_reason"].startswith(FULL) for t in study.trials
               if t.state == TrialState.FAIL)
    assert len(states) <= 2  # one trial per worker at most, then the search stopped
    assert leftovers(runs) == []


def test_one_process_search_prints_no_traceback(tmp_path, space_file):
    """In a real process Optuna's warning for a failed trial carried the whole traceback."""
    env = _sitecustomize(tmp_path, FULL_TORCH_SAVE)
    proc = subprocess.run([sys.executable, "-m", "nas_attn.cli", "search", "--space",
                           str(space_file()), "--study", "one", "--runs-dir",
                           str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
                          check=False)
    out = proc.stdout + proc.stderr
    full_disk_line(proc.returncode, out, f"{FULL}: ", "trial 0 was recorded as failed")
    assert proc.returncode == 1 and out.count("error:") == 1, out


# --------------------------------------------------------------------------------------------
# train, export, predict
def _arch(tmp_path) -> Path:
    p = tmp_path / "arch.json"
    p.write_text(UNetArch(depth=1, widths=(4, 8)).to_json())
    return p


def test_train_on_a_full_disk_keeps_the_earlier_checkpoint(tmp_path, cli, monkeypatch):
    out_dir = tmp_path / "out"
    code, out = cli("train", "--arch", _arch(tmp_path), "--out", out_dir, "--epochs", "1")
    assert code == 0, out
    good = (out_dir / "best.pt").read_bytes()
    full_torch_save(monkeypatch)
    code, out = cli("train", "--arch", _arch(tmp_path), "--out", out_dir, "--epochs", "2")
    full_disk_line(code, out, f"{FULL}: {out_dir / 'best.pt'}", "training stopped in epoch 1 of 2")
    assert code == 1
    assert (out_dir / "best.pt").read_bytes() == good
    assert leftovers(tmp_path) == []
    assert not (out_dir / "resume.pt").exists()


def test_export_on_a_full_disk_replaces_nothing(tmp_path, cli, monkeypatch, space_file):
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", space_file(trials=1), "--study", "e",
                    "--runs-dir", runs)
    assert code == 0, out
    dest = tmp_path / "export"
    old = os.umask(0o022)
    try:
        code, out = cli("export", "e", "--runs-dir", runs, "--out", dest)
    finally:
        os.umask(old)
    assert code == 0, out
    assert {p.name: p.stat().st_mode & 0o777 for p in dest.iterdir()} == {
        n: 0o644 for n in (".nas-attn-output", "model.py", "arch.json", "meta.json",
                           "weights.pt")}
    from nas_attn.paths import MARKER, record_outputs

    for p in dest.iterdir():  # an earlier export, unlike the one about to fail
        if p.name != MARKER:
            p.write_bytes(b"earlier " + p.read_bytes())
    record_outputs(dest, "export", [p for p in dest.iterdir() if p.name != MARKER])
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    full_torch_save(monkeypatch)  # model.py and arch.json are written; weights.pt fails
    code, out = cli("export", "e", "--runs-dir", runs, "--out", dest)
    full_disk_line(code, out, f"{FULL}: {dest / 'weights.pt'}", f"no file in {dest} was replaced")
    assert code == 1
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    monkeypatch.setattr(torch.jit, "save", lambda m, f: enospc())
    monkeypatch.setattr(torch, "save", torch.serialization.save)
    code, out = cli("export", "e", "--runs-dir", runs, "--out", dest,
                    "--format", "torchscript")
    full_disk_line(code, out, f"{FULL}: {dest / 'model.ts'}")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert leftovers(tmp_path) == []


def _images(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 255, (24, 24), dtype=np.uint8)
        Image.fromarray(img).save(root / f"s{i}.png")
    return root


def test_predict_on_a_full_disk_stops_with_one_line(tmp_path, cli, monkeypatch):
    from nas_attn import atomic

    model = tmp_path / "model"
    code, out = cli("train", "--arch", _arch(tmp_path), "--out", model, "--epochs", "1")
    assert code == 0, out
    inputs, masks = _images(tmp_path / "in", 3), tmp_path / "masks"
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 2:
            enospc()
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    code, out = cli("predict", inputs, "--model", model, "--out", masks)
    full_disk_line(code, out, f"{FULL}: {masks / 's1.png'}", "1 of 3 masks were written",
              "--force")
    assert code == 1 and out.count("error:") == 1
    assert sorted(p.name for p in masks.iterdir() if not p.name.startswith(".")) == ["s0.png"]
    assert leftovers(masks) == []
    monkeypatch.undo()
    old = os.umask(0o022)
    try:
        code, out = cli("predict", inputs, "--model", model, "--out", masks, "--force")
    finally:
        os.umask(old)
    assert code == 0, out
    assert {p.stat().st_mode & 0o777 for p in masks.glob("*.png")} == {0o644}


# --------------------------------------------------------------------------------------------
# a real, nearly full file system
@pytest.fixture
def small_fs(tmp_path, tmpfs):
    """A 1 MiB tmpfs at tmp_path/fs, and `fill(kb)` leaving about kb KiB free in it."""
    with tmpfs(tmp_path / "fs") as mnt:
        filler = mnt / ".filler"

        def fill(kb: int) -> None:
            filler.unlink(missing_ok=True)
            st = os.statvfs(mnt)
            n = st.f_bavail * st.f_frsize - kb * 1024
            if n > 0:
                with open(filler, "wb") as f:
                    f.write(b"\0" * n)

        def free() -> None:
            filler.unlink(missing_ok=True)

        fill.free = free
        yield mnt, fill


def _intact(db: Path):
    con = sqlite3.connect(db)
    try:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        con.close()


def test_real_full_disk_search(small_fs, tmp_path, cli, space_file):
    mnt, fill = small_fs
    runs = mnt / "runs"
    space = space_file(trials=3)
    fill(150)
    code, out = cli("search", "--space", space, "--study", "d", "--runs-dir", runs)
    full_disk_line(code, out, FULL)
    assert code == 1 and out.count("error:") == 1 and "Should not reach" not in out, out
    fill.free()
    _intact(runs / "nas_attn.db")
    trials = trials_of(runs / "nas_attn.db", "d")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) <= 1, failed  # the search stopped at the first full-disk failure
    if failed and "no room for its reason" not in out:
        assert failed[0].user_attrs["fail_reason"].startswith(FULL)
    assert leftovers(runs) == []
    code, out = cli("search", "--space", space, "--study", "d", "--runs-dir", runs,
                    "--trials", "1")
    assert code == 0, out


def test_real_full_disk_under_the_sqlite_file(small_fs, tmp_path, cli, space_file):
    """The study database on its own full disk (the runs folder elsewhere): the earlier trial
    stays, the database opens, what the message says of the trial is what the database holds."""
    mnt, fill = small_fs
    url = f"sqlite:///{mnt / 'nas.db'}"
    args = ("search", "--space", space_file(trials=3), "--study", "q", "--runs-dir",
            tmp_path / "runs", "--storage", url)
    code, out = cli(*args, "--trials", "1")
    assert code == 0, out
    fill(16)
    code, out = cli(*args)
    fill.free()
    _intact(mnt / "nas.db")
    trials = trials_of(mnt / "nas.db", "q")
    assert trials[0].state == TrialState.COMPLETE
    if code == 0:  # enough room after all (SQLite reuses free pages): nothing to check
        return
    full_disk_line(code, out, f"{FULL}: the storage {url} cannot be written")
    assert code == 1 and out.count("error:") == 1, out
    said = " ".join(out.split())
    for t in trials[1:]:
        if t.state == TrialState.RUNNING:
            assert f"trial {t.number} stays RUNNING" in said
        elif t.state == TrialState.FAIL:
            assert f"trial {t.number} was recorded as failed" in said


def test_real_full_disk_train_export_predict(small_fs, tmp_path, cli):
    mnt, fill = small_fs
    arch = _arch(tmp_path)
    code, out = cli("train", "--arch", arch, "--out", tmp_path / "model", "--epochs", "1")
    assert code == 0, out
    fill(8)
    code, out = cli("train", "--arch", arch, "--out", mnt / "t", "--epochs", "1")
    full_disk_line(code, out, f"{FULL}: {mnt / 't'}")
    assert code == 1
    fill.free()
    code, out = cli("export", "--checkpoint", tmp_path / "model", "--out", mnt / "e")
    assert code == 0, out
    before = {p.name: p.read_bytes() for p in (mnt / "e").iterdir()}
    fill(8)
    code, out = cli("export", "--checkpoint", tmp_path / "model", "--out", mnt / "e",
                    "--format", "torchscript")
    full_disk_line(code, out, FULL, f"no file in {mnt / 'e'} was replaced")
    assert code == 1
    assert {p.name: p.read_bytes() for p in (mnt / "e").iterdir()} == before
    fill.free()
    inputs = _images(tmp_path / "in", 8)
    fill(12)
    code, out = cli("predict", inputs, "--model", tmp_path / "model", "--out", mnt / "m")
    full_disk_line(code, out, FULL, "masks were written before it")
    assert code == 1 and out.count("error:") == 1
    assert leftovers(mnt) == []


def test_real_full_disk_workers_keep_the_journal_readable(small_fs, tmp_path, cli,
                                                         monkeypatch, space_file):
    """Optuna's journal file kept the half line of a failed append, and the next record glued
    to it made the study unreadable."""
    mnt, fill = small_fs
    runs = mnt / "runs"
    space = space_file(trials=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs.mkdir()
    fill(16)
    code, out = cli("search", "--space", space, "--study", "w", "--runs-dir", runs,
                    "--workers", "2")
    full_disk_line(code, out, FULL)
    assert code == 1, out
    fill.free()
    code, out = cli("search", "--space", space, "--study", "w", "--runs-dir", runs,
                    "--workers", "2", "--trials", "2")
    assert code == 0, out
    from nas_attn.searching.study import open_storage

    study = optuna.load_study(study_name="w", storage=open_storage(
        f"journal:{runs / 'nas_attn.journal'}"))  # readable: no half line glued to another
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert leftovers(runs) == []
