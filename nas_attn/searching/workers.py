"""Several worker processes on one study: the parent's supervisor (the slots it starts are
planned in `slots`, the worker's loop is `worker_loop`).

The parent (`nas-attn search --workers N` or `--gpus ...`) creates the study and enqueues the
baselines once, then starts one `nas-attn worker` process per slot, each pinned before torch
starts (`CUDA_VISIBLE_DEVICES`, or its share of the CPU cores). Workers talk to the parent
over their stdin/stdout, one JSON object per line:

- worker -> parent: `want` (may I start a trial?), `trial` (number), `started` (summary,
  label), `epoch` (epoch, dice), `done` (number, state);
- parent -> worker: `go` or `stop`.

Handing out one permission per trial makes the trial count exact with any number of workers.
The parent knows which trial each worker runs, so when a worker dies it marks that trial FAIL
with the reason and enqueues a retry (`heartbeat.fail_dead_trial`), on every storage, and
starts a replacement worker. Ctrl-C or SIGTERM: the parent sends every worker the same signal
once; each records its running trial as FAIL ("interrupted by ...") and exits; anything still
RUNNING afterwards that a worker of this parent owned is failed by the parent.

Library code: prints nothing; the CLI renders `Supervisor.snapshot()`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..atomic import atomic_write
from ..errors import DiskFullError
from .slots import Slot

MAX_RESTARTS = 3
"""Replacement workers per slot after unexpected deaths."""
STOP_WAIT_S = 60.0
"""How long the parent waits for interrupted workers before killing them."""


# --------------------------------------------------------------------------------------------
# parent side
@dataclass
class WorkerState:
    slot: Slot
    proc: subprocess.Popen | None = None
    pid: int | None = None
    tag: str = ""
    state: str = "starting"
    trial: int | None = None
    summary: str = ""
    label: str | None = None
    epoch: int = 0
    dice: float | None = None
    t0: float = 0.0
    holding: bool = False
    asked: bool = False
    """True once the worker asked for a trial (it started without error)."""
    restarts: int = 0
    exit_code: int | None = None
    handled: bool = True
    owned: set = field(default_factory=set)
    """Trial numbers this slot's workers started (for the final sweep)."""
    log: Path | None = None
    reader: threading.Thread | None = None
    """Reads the worker's messages; its last ones (a `fatal`) come before its exit is handled."""
    exited_at: float = 0.0


class Supervisor:
    """Starts and watches the worker processes of one study; thread-safe snapshot for a view."""

    def __init__(self, study: optuna.Study, slots: list[Slot], worker_args: list[str],
                 trials: int, timeout: float | None, log_dir: Path, epochs: int = 0,
                 placements=None):
        self.study = study
        self.worker_args = worker_args
        self.remaining = int(trials)
        self.placements = placements
        """A one-shot search's `PlacementBudget`: `trials` counts new placements scored, so a
        repeat or a refused placement gives its trial back (within the budget's limits)."""
        if placements is not None and placements.done:
            self.remaining = 0
        self.deadline = None if timeout is None else time.monotonic() + float(timeout)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.epochs = epochs
        self.lock = threading.RLock()
        self.workers = [WorkerState(s) for s in slots]
        self.stopping = False
        self.interrupted = False
        self.start_errors: list[str] = []
        self.events: list[str] = []
        """Notes for the user (a worker died, a trial was retried), in order."""
        self.fatal: str | None = None
        """Why a worker stopped the search (a full disk); no new trials start after it."""
        self.version = 0
        """Bumped on every change (the view redraws its leaderboard when it moves)."""

    # ---- processes ----------------------------------------------------------------------
    def start(self) -> None:
        for w in self.workers:
            self._spawn(w)

    def _spawn(self, w: WorkerState) -> None:
        env = {**os.environ, **w.slot.env}
        cmd = [sys.executable, "-m", "nas_attn.cli", "worker", *self.worker_args,
               "--index", str(w.slot.index)]
        if w.slot.device:
            cmd += ["--device", w.slot.device]
        w.log = self.log_dir / f"worker_{w.slot.index}.log"
        log = open(w.log, "ab")
        # own process group: a terminal's Ctrl-C reaches only the parent, which then sends
        # each worker exactly one SIGINT (a second one could cut its cleanup short)
        w.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=log, env=env, start_new_session=True)
        log.close()
        w.pid = w.proc.pid
        w.tag = f"{socket.gethostname()}:{w.pid}"
        w.state, w.trial, w.holding, w.asked, w.handled = "starting", None, False, False, False
        w.exit_code, w.exited_at = None, 0.0
        w.reader = threading.Thread(target=self._reader, args=(w, w.proc), daemon=True)
        w.reader.start()
        self._changed()

    def _reader(self, w: WorkerState, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                if w.proc is not proc:
                    return
                self._on_message(w, proc, msg)

    def _reply(self, proc: subprocess.Popen, text: str) -> None:
        try:
            proc.stdin.write((text + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _on_message(self, w: WorkerState, proc, msg: dict) -> None:
        ev = msg.get("event")
        if ev == "want":
            w.asked = True
            timed_out = self.deadline is not None and time.monotonic() >= self.deadline
            if self.remaining > 0 and not self.stopping and not timed_out:
                self.remaining -= 1
                w.holding, w.state = True, "sampling"
                self._reply(proc, "go")
            else:
                w.state = "done"
                self._reply(proc, "stop")
        elif ev == "trial":
            w.trial = int(msg["number"])
            w.owned.add(w.trial)
            w.state, w.summary, w.label, w.epoch, w.dice = "sampling", "", None, 0, None
            w.t0 = time.monotonic()
        elif ev == "started":
            w.state, w.summary, w.label = "training", msg.get("summary", ""), msg.get("label")
            w.epoch = int(msg.get("epoch", 0))
        elif ev == "epoch":
            w.epoch, w.dice = int(msg["epoch"]), msg.get("dice")
        elif ev == "done":
            w.holding, w.state = False, "idle"
            if self.placements is not None:
                counted = self.placements.record_outcome(msg.get("outcome", "scored"))
                if self.placements.done:
                    self.remaining = 0
                elif not counted:
                    self.remaining += 1
            w.trial, w.summary, w.label, w.epoch, w.dice = None, "", None, 0, None
        elif ev == "fatal":  # a full disk: every trial would fail the same way, so stop
            self.fatal = self.fatal or str(msg.get("error"))
            self.stopping = True
        self._changed()

    def poll(self) -> bool:
        """Handle workers that exited; True while any worker still runs."""
        with self.lock:
            for w in self.workers:
                if w.proc is None or w.handled:
                    continue
                rc = w.proc.poll()
                if rc is None:
                    continue
                if w.reader is not None and w.reader.is_alive():  # its last messages first
                    w.exited_at = w.exited_at or time.monotonic()
                    if time.monotonic() - w.exited_at < 5.0:
                        continue
                w.handled, w.exit_code = True, rc
                self._exited(w, rc)
            alive = any(w.proc is not None and (w.proc.poll() is None or not w.handled)
                        for w in self.workers)
        if not alive:
            self.write_status()
        return alive

    def _exited(self, w: WorkerState, rc: int) -> None:
        if rc == 0 and not w.holding:
            w.state = "done"
            return
        if self.stopping:
            w.state = "stopped"
            return
        how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in
               signal.valid_signals() else f"exit code {rc}")
        reason = f"worker {w.slot.index} (pid {w.pid}, {w.slot.where}) died: {how}"
        w.state = "died"
        if not w.asked and w.trial is None:
            w.holding = False
            self.start_errors.append(f"worker {w.slot.index} could not start ({how}): "
                                     f"{last_line(w.log)} (log: {w.log})")
            self.events.append(self.start_errors[-1])
            return
        if w.trial is not None and self._fail(w.trial, reason, retry=True):
            self.events.append(f"trial {w.trial} failed ({reason}); its configuration is "
                               f"queued again (unless it used up its retries)")
        else:
            self.events.append(reason)
        if w.holding:  # the trial it was given never finished: someone runs it (or its retry)
            self.remaining += 1
            w.holding = False
        if self.remaining > 0 and w.restarts < MAX_RESTARTS:
            w.restarts += 1
            self.events.append(f"worker {w.slot.index} restarted "
                               f"({w.restarts}/{MAX_RESTARTS})")
            self._spawn(w)

    def _fail(self, number: int, reason: str, retry: bool) -> bool:
        from .heartbeat import fail_dead_trial
        from .study import is_storage_error

        try:
            if retry:
                return fail_dead_trial(self.study, number, reason)
            from . import optuna_adapter as OA

            t = OA.frozen_of_number(self.study, number)
            if t.state != TrialState.RUNNING:
                return False
            return OA.fail_trial(OA.storage_of(self.study), OA.trial_id(t), reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        except Exception as e:  # a storage on a full disk: the trial stays RUNNING
            if not is_storage_error(e):
                raise
            return False

    def started_any(self) -> bool:
        with self.lock:
            return any(w.asked for w in self.workers)

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: the same signal, once, to every worker (so that their trials say
        which); no new trials are handed out."""
        from ..interrupts import interrupted

        sig = interrupted() or signal.SIGINT
        with self.lock:
            self.stopping = self.interrupted = True
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is None:
                    try:
                        w.proc.send_signal(sig)
                    except ProcessLookupError:
                        pass
                    w.state = "stopping"
            self._changed()

    def wait_stopped(self, limit_s: float = STOP_WAIT_S) -> None:
        """After `interrupt`: wait for the workers (SIGKILL after `limit_s`), then fail what a
        worker of this parent still left RUNNING."""
        end = time.monotonic() + limit_s
        while self.poll() and time.monotonic() < end:
            time.sleep(0.1)
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        self.poll()
        from ..interrupts import reason as interrupt_reason

        self.sweep(interrupt_reason())

    def sweep(self, reason: str) -> list[int]:
        """Fail trials this parent's workers started that are still RUNNING."""
        owned = set().union(*(w.owned for w in self.workers))
        tags = {w.tag for w in self.workers}
        failed = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in owned or t.user_attrs.get("worker") in tags:
                if self._fail(t.number, reason, retry=False):
                    failed.append(t.number)
        return failed

    def run(self, on_tick=None, tick_s: float = 0.25) -> None:
        """Start the workers and wait for them; KeyboardInterrupt propagates after `interrupt`
        + `wait_stopped` (the caller exits 130)."""
        self.start()
        try:
            while self.poll():
                if on_tick is not None:
                    on_tick()
                time.sleep(tick_s)
        except KeyboardInterrupt:
            from ..interrupts import acknowledge, second_raises

            acknowledge()
            self.interrupt()
            try:
                with second_raises():  # a second Ctrl-C means "stop waiting"
                    self.wait_stopped()
            except KeyboardInterrupt:  # ... kill the workers, fail what they ran
                self.wait_stopped(limit_s=0.0)
            raise
        self.sweep("worker exited while its trial ran")

    # ---- view ---------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            now = time.monotonic()
            return [{"worker": w.slot.index, "pid": w.pid, "where": w.slot.where,
                     "state": w.state, "trial": w.trial, "summary": w.summary,
                     "label": w.label, "epoch": w.epoch, "dice": w.dice,
                     "elapsed_s": round(now - w.t0, 1) if w.trial is not None else None,
                     "restarts": w.restarts, "exit_code": w.exit_code}
                    for w in self.workers]

    def write_status(self, path: Path | None = None) -> Path:
        """`workers.json` next to the logs: what each worker does (pid, trial, epoch, Dice)."""
        path = path or self.log_dir / "workers.json"
        try:
            return atomic_write(path, json.dumps({"remaining": self.remaining,
                                                  "workers": self.snapshot()}, indent=1))
        except DiskFullError:  # a status file: not worth stopping the workers for
            return path


def last_line(path: Path | None) -> str:
    try:
        lines = [x.strip() for x in Path(path).read_text(errors="replace").splitlines()]
    except (OSError, TypeError):
        return "no log"
    lines = [x for x in lines if x and "Warning" not in x and "optuna_warn(" not in x]
    return lines[-1][:300] if lines else "no output"
