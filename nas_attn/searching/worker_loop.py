"""The worker side of a parallel search (`nas-attn worker`): trials of an existing study, one
per `go` from the parent on stdin, progress as JSON lines on stdout (see `workers`)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import optuna

from ..atomic import atomic_write
from ..errors import DiskFullError, StudyError
from ..paths import inside


class PipeListener:
    """The search loop's listener in a worker: progress lines to the parent."""

    def __init__(self, out):
        self.out = out

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def trial_started(self, number, arch, label):
        self.send(event="started", number=number, summary=arch.summary(), label=label)

    def epoch_done(self, number, epoch, metrics):
        d = metrics.get("dice")
        self.send(event="epoch", number=number, epoch=epoch,
                  dice=None if d is None else float(d))

    def trial_done(self, trial):
        from .oneshot.budget import outcome

        # a one-shot repeat or refusal scored nothing: the parent hands out another trial
        self.send(event="done", number=trial.number, state=trial.state.name,
                  outcome=outcome(trial))


def _pin_threads() -> None:
    threads = os.environ.get("NAS_ATTN_THREADS")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, "") and torch.cuda.is_available():
        torch.cuda.set_device(0)


def worker_main(req, supervised: bool = True) -> int:
    """Run trials of `req`'s (existing) study: one per `go` from the parent on stdin, or, with
    `supervised=False`, `req.trials` of them. Returns the exit code."""
    from .opening import open_search
    from .run import optimize

    # the protocol owns the real stdout; anything else printed goes to stderr (the log)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from ..interrupts import acknowledge, install, surfaced
    from ..interrupts import reason as interrupt_reason

    install()  # a signal always stops the worker, however often Python drops it
    _pin_threads()
    listener = PipeListener(proto)
    try:
        session = open_search(req, listener=listener)
    except DiskFullError as e:
        listener.send(event="fatal", error=str(e))
        raise
    from .heartbeat import tag_trial

    objective = session.objective

    def tagged(trial: optuna.Trial):
        try:
            tag_trial(trial)
            listener.send(event="trial", number=trial.number)
        except KeyboardInterrupt:  # Ctrl-C before the objective runs: say so all the same
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", interrupt_reason())
            raise
        return objective(trial)

    done_cb = [lambda study, trial: listener.trial_done(trial)]
    try:
        while True:
            listener.send(event="want")
            answer = sys.stdin.readline().strip()
            if answer != "go":  # "stop", or the parent is gone (EOF)
                return 0
            try:
                with surfaced():  # optuna's storage writes after the trial, too
                    optimize(session, tagged, n_trials=1, callbacks=done_cb, hint=False)
            except DiskFullError as e:  # the parent stops the search with this line
                listener.send(event="fatal", error=str(e))
                raise
    except KeyboardInterrupt:
        return acknowledge()


def study_space_file(study_name: str, storage, runs_dir: Path) -> Path | None:
    """For a worker joining an existing study without the space file: the space stored with
    the study, written to `runs_dir/<study>/space.yaml`. None when the study does not exist."""
    from .study import study_names

    if study_name not in study_names(storage):
        return None
    study = optuna.load_study(study_name=study_name, storage=storage)
    text = study.user_attrs.get("space_yaml")
    if text is None:
        raise StudyError(f"study {study_name!r} has no stored search space; give --space")
    path = inside(runs_dir, study_name, "space.yaml")
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, text)
    return path
