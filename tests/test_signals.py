"""A signal always stops the run and keeps its work (`nas_attn.interrupts`): SIGINT and SIGTERM at
many moments of a short search (while it starts, during a trial, right after a trial ends),
interrupts Python drops and delivers again, the clean-up never waited for long, and one-shot
phase 1 keeping its resume.pt."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

TINY = """
macro: {depth: [1], base_width: [4]}
encoder: {choices: [none, se, eca]}
skip: {choices: [none, gate]}
training: {batch_size: 4, lr: [0.005]}
budget: {epochs: 2, samples_per_epoch: 8}
data: {source: builtin, builtin_n: 8, builtin_size: 24}
search: {trials: 200, n_startup_trials: 200, sampler: random, pruner: none}
"""
STOP_LIMIT_S = 60
"""Liveness, not speed: the old code never stopped (107 more trials in seven minutes)."""


def _spawn(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "nas_attn.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200"},
                            # as a terminal's Ctrl-C finds it (a suite run in the background
                            # hands its children SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _completed(db: Path) -> int:
    """Completed trials so far, read without writing (optuna would create its tables while
    the search creates them)."""
    import sqlite3

    if not db.exists():
        return -1
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'"
                               ).fetchone()[0]
    except sqlite3.Error:
        return -1


@pytest.mark.parametrize("signum, when", [
    (signal.SIGTERM, "starting"), (signal.SIGINT, "starting"),
    (signal.SIGTERM, "in a trial"), (signal.SIGINT, "in a trial"),
    (signal.SIGTERM, "after a trial"), (signal.SIGINT, "after a trial"),
])
def test_a_signal_stops_a_search_at_any_moment(tmp_path, signum, when):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(TINY))
    db = tmp_path / "runs" / "nas_attn.db"
    proc = _spawn(["search", "--space", "s.yaml", "--study", "s", "--runs-dir", "runs"],
                  tmp_path)
    t0 = time.monotonic()
    if when == "starting":
        time.sleep(0.3)
    else:
        first = None
        while time.monotonic() - t0 < 240 and proc.poll() is None:
            n = _completed(db)
            if first is None and n >= 1:
                first = n
                if when == "in a trial":
                    time.sleep(0.25)  # into the next trial (each takes about a second)
                    break
            elif first is not None and n > first:
                break  # right after a trial ended
            time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=STOP_LIMIT_S + 60)
    stopped = time.monotonic() - sent
    err = err.decode(errors="replace")
    assert proc.returncode == 128 + signum, err
    assert stopped < STOP_LIMIT_S, f"stopped {stopped:.0f} s after the signal"
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if db.exists() and when != "starting":
        study = optuna.load_study(study_name="s",
                                  storage=optuna.storages.RDBStorage(f"sqlite:///{db}"))
        trials = study.get_trials(deepcopy=False)
        states = [t.state.name for t in trials]
        assert "RUNNING" not in states, states
        said = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        for t in trials:  # the trial the signal stopped says which signal it was
            if t.state.name == "FAIL":
                assert said in t.user_attrs.get("fail_reason", ""), t.user_attrs
        assert len(states) < 50  # it did not go on searching


def _run_script(body: str, timeout=120):
    script = "import os, signal, sys, time, weakref\nfrom nas_attn import interrupts\n" + \
        textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout)


def test_an_interrupt_python_drops_is_delivered_again():
    """A signal handled inside a weakref callback: its KeyboardInterrupt is 'unraisable' and
    Python goes on; the watchdog delivers it again and the code stops."""
    out = _run_script("""
        interrupts.install()
        class A: pass
        a = A()
        def cb(ref):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10 ** 6): pass  # the handler runs here; Python drops its interrupt
        r = weakref.ref(a, cb)
        t0 = time.monotonic()
        try:
            del a
            while time.monotonic() - t0 < 30:
                time.sleep(0.01)
            print("went on"); sys.exit(0)
        except KeyboardInterrupt:
            print(f"stopped {time.monotonic() - t0:.1f}")
            sys.exit(interrupts.acknowledge())
    """)
    assert out.returncode == 143, out
    assert out.stdout.startswith("stopped") and float(out.stdout.split()[1]) < 10, out.stdout
    assert "Exception ignored" not in out.stderr, out.stderr


def test_signals_are_never_ignored_and_clean_up_is_not_waited_for_long():
    """Before the command acknowledges the interrupt every signal raises again; during its
    clean-up a further signal soon after is left to it, a third ends the process at once."""
    out = _run_script("""
        interrupts.install()
        caught = 0
        for _ in range(2):  # the first, and one sent again before the acknowledgement
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                caught += 1
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        interrupts.acknowledge()
        os.kill(os.getpid(), signal.SIGINT)  # during clean-up: left to it
        time.sleep(0.2)
        print(f"caught {caught}, clean-up goes on", flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # a third: stop now
        time.sleep(5)
        print("not stopped")
    """)
    assert out.returncode == 130, out
    assert "caught 2, clean-up goes on" in out.stdout and "not stopped" not in out.stdout
    assert "stopping now" in out.stderr


def test_a_clean_up_that_hangs_is_ended(monkeypatch):
    out = _run_script("""
        interrupts.CLEANUP_LIMIT_S = 1.0
        interrupts.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except KeyboardInterrupt:
            interrupts.acknowledge()
            time.sleep(30)  # a clean-up that never ends
        print("not stopped")
    """)
    assert out.returncode == 143 and "not stopped" not in out.stdout, out
    assert "clean-up took more than" in out.stderr


ONESHOT = """
macro: {depth: [1], base_width: [4]}
encoder: {choices: [none, se]}
skip: {choices: [none]}
training: {batch_size: 4}
budget: {epochs: 2, samples_per_epoch: 8}
data: {source: builtin, builtin_n: 8, builtin_size: 24}
search: {trials: 4, strategy: oneshot, pruner: none,
         oneshot: {epochs: 60, trials: 4, max_supernets: 1}}
"""


def test_sigterm_in_phase_1_keeps_the_supernet_and_the_next_launch_resumes(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(ONESHOT))
    args = ["search", "--space", "s.yaml", "--study", "s", "--runs-dir", "runs"]
    proc = _spawn(args, tmp_path)
    t0 = time.monotonic()
    resume = None
    while time.monotonic() - t0 < 240 and resume is None:
        found = list((tmp_path / "runs").glob("s/supernet/*/resume.pt"))
        resume = found[0] if found else None
        time.sleep(0.1)
    assert resume is not None, proc.communicate(timeout=5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=STOP_LIMIT_S + 60)
    out = " ".join(out.decode(errors="replace").split())
    assert proc.returncode == 143, out
    assert resume.exists()  # hours of supernet training on real data: kept
    assert "phase 1 stopped in supernet 1 of 1 at epoch" in out and "resume.pt" in out, out
    assert "ran 0 trial(s)" in out and "recorded as failed" not in out, out
    import torch

    epoch = torch.load(resume, map_location="cpu", weights_only=False)["epoch"]
    assert epoch >= 1
    again = _spawn(args, tmp_path)  # the next launch continues phase 1 from that epoch
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err.decode(errors="replace")
    study = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'runs' / 'nas_attn.db'}"))
    (sn,) = study.user_attrs["oneshot"]["supernets"]
    assert sn["resumed_from_epoch"] == epoch
    assert f"resumed after epoch {epoch}" in " ".join(out.decode(errors="replace").split())


def test_an_error_raised_by_clean_up_during_an_interrupt_is_the_interrupt():
    # optuna's journal lock: Ctrl-C between its rename and unlink makes its clean-up raise
    # FileNotFoundError with the KeyboardInterrupt as context; the trial must read "interrupted"
    from nas_attn import interrupts

    interrupts.reset()

    def release():
        try:
            raise KeyboardInterrupt
        except BaseException:
            raise FileNotFoundError("lock.rename")

    with pytest.raises(KeyboardInterrupt):
        with interrupts.surfaced():
            release()
    with pytest.raises(FileNotFoundError):  # an error of its own stays what it is
        with interrupts.surfaced():
            raise FileNotFoundError("data.npy")
    assert interrupts.masks_interrupt(RuntimeError()) is False
