"""Several worker processes on one study, with real processes and real storages (a journal
file and a throwaway PostgreSQL server): exact trial counts, baselines once, a killed worker's
trial failed with its reason and retried, Ctrl-C of the parent, heartbeats across machines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_attn.searching.study import open_storage

ROOT = Path(__file__).resolve().parents[1]

TINY = """
macro: {depth: [1], base_width: [4]}
encoder: {choices: [none, se]}
skip: {choices: [none, gate]}
decoder: {choices: [none, eca]}
training: {batch_size: 4, lr: 0.005}
budget: {epochs: 1, samples_per_epoch: 4}
data: {source: builtin, builtin_n: 6, builtin_size: 24}
search: {trials: 2, n_startup_trials: 1, sampler: random, pruner: none}
"""
# epochs long enough to kill or interrupt a worker after its first epoch, before its last
SLOW = TINY.replace("budget: {epochs: 1, samples_per_epoch: 4}",
                    "budget: {epochs: 3, samples_per_epoch: 48}")


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", **extra}
    return env


def _search(tmp_path, space_text, *args, env=None) -> subprocess.Popen:
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(space_text))
    cmd = [sys.executable, "-m", "nas_attn.cli", "search", "--space", str(space),
           "--runs-dir", str(tmp_path / "runs"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or _env(), cwd=tmp_path)


def _finish(proc, limit=240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=limit)
    return proc.returncode, out


def _study(storage: str, name: str, runs: Path) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage, runs))


def _wait_status(tmp_path, study, cond, limit=120):
    path = tmp_path / "runs" / study / "workers" / "workers.json"
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = None
        if status:
            hit = cond(status["workers"])
            if hit:
                return hit
        time.sleep(0.1)
    raise AssertionError(f"workers never reached the awaited state; last status: {status}")


def _running_at_epoch(workers):
    for w in workers:
        if w["trial"] is not None and w["epoch"] >= 1 and w["state"] == "training":
            return w
    return None


def _check_exact(study, trials):
    ts = study.get_trials(deepcopy=False)
    states = [t.state for t in ts]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    assert len(ts) == trials, [(t.number, t.state.name, t.user_attrs.get("fail_reason"))
                               for t in ts]
    labels = [t.user_attrs["baseline"] for t in ts if "baseline" in t.user_attrs]
    assert sorted(labels) == ["attention_unet", "plain_unet"]  # each baseline exactly once


def _journal(tmp_path):
    return f"journal:{(tmp_path / 'runs' / 'nas_attn.journal').resolve()}"


# ---------------------------------------------------------------------------------------------
def test_four_workers_on_the_one_node_default(tmp_path):
    code, out = _finish(_search(tmp_path, TINY, "--workers", "4", "--trials", "6",
                                "--study", "four"))
    assert code == 0, out
    assert "journal file" in out  # the default for several workers, said out loud
    _check_exact(_study(_journal(tmp_path), "four", tmp_path / "runs"), 6)
    # `show` without --storage finds the journal when only workers ran in this folder
    show = subprocess.run([sys.executable, "-m", "nas_attn.cli", "show", "four", "--runs-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, env=_env())
    assert show.returncode == 0 and "plain_unet" in show.stdout, show.stdout + show.stderr


def test_the_api_runs_worker_processes_as_the_command_does(tmp_path):
    """`na.search(workers=2)`: two processes, the journal default, each baseline once."""
    import nas_attn as na

    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(TINY))
    study = na.search(str(space), trials=4, workers=2, study="api2",
                      runs_dir=str(tmp_path / "runs"))
    assert (tmp_path / "runs" / "nas_attn.journal").is_file()
    _check_exact(study, 4)
    status = json.loads((tmp_path / "runs" / "api2" / "workers" / "workers.json").read_text())
    pids = {w["pid"] for w in status["workers"]}
    assert len(pids) == 2 and None not in pids and os.getpid() not in pids
    ran_in = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in study.trials}
    assert ran_in <= pids  # every trial ran in a worker process, none in this one
    with pytest.raises(na.NasAttnError, match="SQLite cannot take 2 concurrent workers"):
        na.search(str(space), trials=1, workers=2, runs_dir=str(tmp_path / "r2"),
                  storage=f"sqlite:///{tmp_path}/x.db")


def test_four_workers_on_postgresql(tmp_path, pg_url):
    name = f"pg4_{uuid.uuid4().hex[:8]}"
    code, out = _finish(_search(tmp_path, TINY, "--workers", "4", "--trials", "6", "--study",
                                name, "--storage", pg_url))
    assert code == 0, out
    _check_exact(_study(pg_url, name, tmp_path / "runs"), 6)


def test_several_workers_refuse_sqlite(tmp_path, capsys):
    from nas_attn.cli import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--space", "smoke", "--workers", "2", "--runs-dir", str(tmp_path),
              "--storage", f"sqlite:///{tmp_path}/x.db"])
    out = capsys.readouterr()
    assert e.value.code == 2
    assert "SQLite cannot take 2 concurrent workers" in out.err and "journal:" in out.err


def test_postgresql_url_without_driver_names_the_package(tmp_path, monkeypatch):
    import importlib.util

    from nas_attn.errors import StudyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("psycopg") else real(name, *a))
    with pytest.raises(StudyError, match=r"psycopg\[binary\]"):
        open_storage("postgresql://u@127.0.0.1:5/db", tmp_path)


def test_killed_worker_trial_fails_with_reason_and_is_retried(tmp_path):
    # killed in epoch 2 or later, so that epoch 1 has left its resume.pt (killed inside epoch 1
    # there is nothing to resume from, and the retry rightly starts afresh)
    space = SLOW.replace("epochs: 3,", "epochs: 6,")
    assert space != SLOW
    proc = _search(tmp_path, space, "--workers", "2", "--trials", "2", "--study", "kill")

    def resumable(workers):
        w = _running_at_epoch(workers)
        if w is not None and w["epoch"] >= 2 and (
                tmp_path / "runs" / "kill" / f"trial_{w['trial']:04d}" / "resume.pt").is_file():
            return w
        return None

    victim = _wait_status(tmp_path, "kill", resumable)
    os.kill(victim["pid"], signal.SIGKILL)
    code, out = _finish(proc)
    assert code == 0, out
    study = _study(_journal(tmp_path), "kill", tmp_path / "runs")
    dead = study.trials[victim["trial"]]
    assert dead.state == TrialState.FAIL
    assert "died: killed by SIGKILL" in dead.user_attrs["fail_reason"]
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params
    assert retry[0].user_attrs["resumed_from"].endswith(f"trial_{dead.number:04d}/resume.pt")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2  # exact count
    assert "queued again" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_signal_stops_every_worker_and_the_study_resumes(tmp_path, signum):
    # trials long enough (20 short epochs) that the Ctrl-C, sent once the status file shows a
    # worker in epoch 1 or later, still finds it training (with 3 epochs it could land after
    # the trial had ended: nothing was interrupted)
    slow = SLOW.replace("epochs: 3,", "epochs: 20,")
    assert slow != SLOW
    proc = _search(tmp_path, slow, "--workers", "2", "--trials", "6", "--study", "intr")
    _wait_status(tmp_path, "intr", lambda ws: (w := _running_at_epoch(ws)) and
                 w["epoch"] <= 10 and w)
    pids = [w["pid"] for w in json.loads(
        (tmp_path / "runs" / "intr" / "workers" / "workers.json").read_text())["workers"]]
    proc.send_signal(signum)
    code, out = _finish(proc, limit=120)
    assert code == 128 + signum, out
    for pid in pids:  # every worker is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    study = _study(_journal(tmp_path), "intr", tmp_path / "runs")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    said = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"  # the workers got the same
    assert failed and all("interrupted" in t.user_attrs["fail_reason"] and
                          said in t.user_attrs["fail_reason"] for t in failed), \
        [t.user_attrs.get("fail_reason") for t in failed]
    done = states.count(TrialState.COMPLETE)
    # one worker on a journal file still runs under a supervising parent
    code, out = _finish(_search(tmp_path, slow, "--trials", "1", "--study", "intr"))
    assert code == 0 and "resumed with" in out, out
    study = _study(_journal(tmp_path), "intr", tmp_path / "runs")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == done + 1


def test_heartbeat_fails_a_dead_process_trial_across_machines(tmp_path, pg_url):
    """No parent watches a worker that joined from another machine: its death is found by the
    heartbeat, the trial FAILs with a reason and a later worker runs the retry."""
    name = f"hb_{uuid.uuid4().hex[:8]}"
    env = _env(NAS_ATTN_HEARTBEAT_INTERVAL="1", NAS_ATTN_GRACE_PERIOD="3")
    proc = _search(tmp_path, SLOW, "--trials", "1", "--study", name, "--storage", pg_url,
                   env=env)
    storage = open_storage(pg_url, tmp_path / "runs")
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if list((tmp_path / "runs" / name).glob("trial_*/resume.pt")):
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.trials[0].state == TrialState.RUNNING  # what kill -9 leaves without help
    # as if it ran on another machine (on this one, a resume fails it at once: see
    # test_hostile's kill -9 test); there, only the heartbeat can tell
    storage.set_trial_user_attr(study.trials[0]._trial_id, "worker", "another-host:1")
    time.sleep(4)
    # a worker joining with only the study name, the storage and a data source: the space
    # comes from the study
    cmd = [sys.executable, "-m", "nas_attn.cli", "search", "--study", name, "--storage",
           pg_url, "--data", "builtin", "--trials", "2", "--runs-dir", str(tmp_path / "runs")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name=name, storage=storage)
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and "no heartbeat" in dead.user_attrs["fail_reason"]
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params and "resumed_from" in retry[0].user_attrs


def test_train_resumes_from_a_killed_runs_state(tmp_path):
    """`resume.pt` (written after every epoch, left behind only by a run killed outright)
    continues training at the next epoch with the saved weights, optimizer and best so far."""
    import shutil

    from nas_attn.architecture.description import UNetArch
    from nas_attn.data import DataConfig, load_data
    from nas_attn.training import TrainConfig, train

    dcfg = DataConfig(source="builtin", builtin_n=6, builtin_size=24)
    tr, va = load_data(dcfg)
    arch = UNetArch(classes=tr.classes, depth=1, widths=(4, 8))
    cfg = TrainConfig.make(epochs=3, batch_size=4, samples_per_epoch=4, device="cpu", ema=True)
    saved = tmp_path / "saved.pt"

    def grab(epoch, metrics):  # what a kill -9 after epoch 2 leaves on disk
        if epoch == 2:
            shutil.copy(tmp_path / "a" / "resume.pt", saved)

    full = train(arch, tr, va, dcfg, cfg, on_epoch=grab, out_dir=tmp_path / "a", preview=False)
    assert not (tmp_path / "a" / "resume.pt").exists()  # a finished run leaves none
    seen = []
    res = train(arch, tr, va, dcfg, cfg, out_dir=tmp_path / "b", preview=False,
                resume_from=saved, on_epoch=lambda e, m: seen.append(e))
    assert seen == [3]  # only the epoch after the saved one ran
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.history[:2] == full.history[:2]
    assert res.steps == full.steps
    assert (tmp_path / "b" / "best.pt").exists()


def test_plan_slots_pins_gpus_and_splits_cores(monkeypatch):
    from nas_attn.errors import StudyError
    from nas_attn.searching.slots import cpu_cores, plan_slots

    slots = plan_slots(None, "0,2", per_gpu=2, check=False)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "2", "2"]
    assert [s.where for s in slots] == ["cuda:0", "cuda:0", "cuda:2", "cuda:2"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = plan_slots(2, None)
    assert all(s.env["OMP_NUM_THREADS"] == str(max(1, cpu_cores() // 2)) for s in cpu)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's cap wins
    assert plan_slots(1, None)[0].env["NAS_ATTN_THREADS"] == "1"
    for bad in ("x", "0,0", "", "99"):
        with pytest.raises(StudyError, match="--gpus"):
            plan_slots(None, bad)
    with pytest.raises(StudyError, match="not both"):
        plan_slots(2, "0")


def _a_running_trial_reported(db) -> bool:
    """Whether a RUNNING trial has reported an epoch, read through a read-only connection:
    opening the study with optuna while the search is still creating its storage races it to
    create the schema (seen under load: the search failed with 'UNIQUE constraint failed:
    alembic_version.version_num')."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_intermediate_values v "
                "ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or its tables not yet
        return False
    return bool(row and row[0])


def test_sigterm_does_what_ctrl_c_does(tmp_path):
    """`kill`, `timeout` and batch schedulers send SIGTERM: the one-process search records the
    running trial as failed (interrupted) and exits like Ctrl-C, not with the trial RUNNING."""
    slow = SLOW.replace("epochs: 3,", "epochs: 20,")
    proc = _search(tmp_path, slow, "--trials", "3", "--study", "term")
    db = tmp_path / "runs" / "nas_attn.db"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and _a_running_trial_reported(db):
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc, limit=120)
    assert code == 143, out  # 128 + SIGTERM, as a batch scheduler expects
    assert "interrupted" in out and "Traceback" not in out
    study = optuna.load_study(study_name="term", storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all("interrupted" in t.user_attrs["fail_reason"] for t in failed), \
        [t.user_attrs.get("fail_reason") for t in failed]
