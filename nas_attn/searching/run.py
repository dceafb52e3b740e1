"""Running a search: the study loop over the opened session (`opening.py`), phase 1 of a
one-shot search, and the stop on a full disk or a storage that cannot be written
(`faults.py`).

Library code: it prints nothing. Progress goes to the session's listener (the CLI's live view).
"""
from __future__ import annotations

from typing import Any

import optuna

from ..errors import DiskFullError, NasAttnError
from ..interrupts import acknowledge, surfaced
from ..interrupts import reason as interrupt_reason
from . import optuna_adapter as OA
from .faults import stopped_by_disk
from .opening import SearchRequest, SearchSession
from .study import storage_errors


def run_search(session: SearchSession, trials: int | None, timeout: float | None) -> optuna.Study:
    """Run `trials` trials (one-shot: until `trials` new placements are scored, see
    `oneshot.budget`; None: until `timeout`); a diverged or otherwise failed trial is recorded
    and the study goes on.
    A full disk stops the search after the trial it failed, with `DiskFullError` (see
    `stopped_by_disk`): the next trial would fail the same way. A storage that cannot be
    written stops it too (`StudyError` when it is not for lack of space)."""
    listener = session.objective.listener
    callbacks = [lambda study, trial: listener.trial_done(trial)]
    session.prepare()  # what the strategy runs before its trials (one-shot: phase 1), once
    budget = None if trials is None else session.plan.budget(session, trials)
    if budget is not None:  # a stopping rule of the strategy's (one-shot: new placements)
        if budget.done:
            return session.study
        trials = None
        callbacks.append(budget.callback)
    optimize(session, n_trials=trials, timeout=timeout, callbacks=callbacks)
    return session.study


def optimize(session: SearchSession, func=None, *, callbacks=(), hint: bool = True,
             **kwargs) -> None:
    """`study.optimize` of the session's objective (or of `func`, which calls it): a trial that
    fails with a `NasAttnError` is recorded and the loop goes on; a full disk, or a storage that
    cannot be written, stops it with one error (`stopped_by_disk`, with `hint`)."""
    objective = session.objective
    objective.current, objective.disk_full = None, None
    resume = None
    if hint:
        resume = (session.request or SearchRequest()).resume_command(session.study.study_name)

    def done(study, trial):
        objective.current = None  # the storage has the trial's result

    try:
        with OA.started_trials(session.study) as started:
            try:
                # surfaced: an error that hides the signal is the signal (optuna's `_run_trial`
                # raises UnboundLocalError when the interrupt cuts its record of the result)
                with surfaced(), storage_errors(OA.storage_of(session.study)):
                    session.study.optimize(func or objective, catch=(NasAttnError,),
                                           callbacks=[done, *callbacks],
                                           gc_after_trial=objective.gc_after_trial, **kwargs)
            except KeyboardInterrupt:
                fail_interrupted(session.study, started)
                raise
    except DiskFullError as e:  # the storage itself could not be written
        raise stopped_by_disk(session.study, objective, e, resume) from None
    if objective.disk_full is not None:
        raise stopped_by_disk(session.study, objective, resume=resume) from None


def fail_interrupted(study: optuna.Study, started: list[int]) -> None:
    """After a signal: the trials this process started that are still RUNNING, marked FAIL
    with the reason. The objective fails its own trial, but a signal can land where it cannot:
    in `ask` while the sampler samples (the trial exists, its training has not begun), or
    after the objective returned and before optuna recorded the result. Such a trial would
    stay RUNNING until a resume or another worker's heartbeat check failed it. The interrupt is
    acknowledged first, so that these writes are not cut by its re-delivery (a second signal
    still ends the process, see `interrupts`)."""
    acknowledge()
    storage = OA.storage_of(study)
    for tid in list(started):  # (failing one takes it off the list)
        try:
            trial = storage.get_trial(tid)
            if trial.state == optuna.trial.TrialState.RUNNING:
                OA.fail_trial(storage, tid,
                              trial.user_attrs.get("fail_reason") or interrupt_reason())
        except Exception:  # noqa: BLE001 - a storage that cannot be written: left to a resume
            continue
