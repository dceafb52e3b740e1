"""`finalize --workers N / --gpus LIST`: the race's trainings in worker processes.

Each worker is `nas-attn finalize STUDY --join` with the parent's options, pinned like a search's
workers (`slots.plan_slots`: CUDA_VISIBLE_DEVICES per GPU, or an equal share of the CPU cores).
The workers split every round between them through the claims of `racing.Runner` (no
coordinator: a worker on another machine that shares the runs folder joins the same way). The
parent reports each finished training as its file appears, and once the workers are done it
replays the race from the files, trains whatever a dead worker left (its claim is stale), and
writes the result. Ctrl-C stops every worker: its claim is released, its finished trainings
stay, and the same command resumes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import StudyError
from .racing import Progress
from .slots import plan_slots

STOP_WAIT_S = 60.0


def run_workers(study_name: str, runner, arms: dict, storage: str | None, runs_dir: Path,
                workers: int | None, gpus: str | None, per_gpu: int, device: str | None,
                options: list[str]) -> None:
    """Start the workers, report their trainings, wait for them (module docstring)."""
    slots = plan_slots(workers, gpus, per_gpu, device)
    seen = {p.name for p in runner.runs_dir.glob("*.json")}  # earlier ones: read back later
    log_dir = runner.out_root / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for slot in slots:
        cmd = [sys.executable, "-m", "nas_attn.cli", "finalize", study_name, "--join",
               "--runs-dir", str(runs_dir), *options]
        cmd += ["--storage", storage] if storage else []
        cmd += ["--device", slot.device] if slot.device else []
        log = open(log_dir / f"worker_{slot.index}.log", "ab")  # noqa: SIM115 (the child's)
        procs.append((slot, subprocess.Popen(cmd, env={**os.environ, **slot.env}, stdout=log,
                                             stderr=subprocess.STDOUT), log))
    try:
        while any(p.poll() is None for _, p, _ in procs):
            _report(runner, arms, seen)
            time.sleep(2.0)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        for _, _, log in procs:
            log.close()
    _report(runner, arms, seen)
    failed = [(slot, p.returncode) for slot, p, _ in procs if p.returncode != 0]
    if failed:
        slot, code = failed[0]
        raise StudyError(f"finalize worker {slot.index} ({slot.where}) exited with code {code}; "
                         f"its log: {log_dir / f'worker_{slot.index}.log'}. The finished "
                         "trainings are kept: the same command resumes")


def _report(runner, arms: dict, seen: set[str]) -> None:
    """Each training a worker finished since the last look, to the parent's `progress`."""
    if runner.progress is None or not runner.runs_dir.is_dir():
        return
    from ..stats.compare import estimate
    from ..stats.counts import CaseCounts

    for path in sorted(runner.runs_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
        if path.name in seen:
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        seen.add(path.name)
        if rec.get("key") not in arms:
            continue  # a training of an earlier finalize with other entrants
        runner.done += 1
        ci = estimate([CaseCounts.from_dict(rec["val_cases"])])
        phase = "confirm" if rec["seed"] - runner.offset >= 100 else "race"
        runner.progress(Progress(runner.done, runner.planned, rec.get("trial"), rec["seed"],
                                 rec["val"], rec.get("test"), rec.get("label", ""), phase,
                                 (ci.low, ci.high), arms[rec["key"]].control_of))


def _stop(procs) -> None:
    for _, p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    for _, p, _ in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
