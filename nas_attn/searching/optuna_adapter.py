"""Every use of optuna's private API, in one place: the one file to fix when optuna changes.

Optuna's public API gives no way to reach a study's storage or a trial's storage id, to fail a
trial that another process was running, to name a journal's operations or to hear which trials
its heartbeat check found stale; nas-attn needs each (workers, resume, fault reports). Nothing
else in the package touches an optuna attribute or module whose name starts with `_`
(`tests/test_layout.py` checks that), and `tests/test_optuna_adapter.py` checks every function
here against the installed optuna.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ..interrupts import deferred

OPTIMIZE_LOGGER = "optuna.study._optimize"
"""The logger optuna reports a failed trial on (the CLI quiets what it reports itself)."""


def storage_of(study: optuna.Study) -> BaseStorage:
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number), for a live or a frozen trial."""
    return trial._trial_id


def trial_id_of_number(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def frozen_of_number(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` of `study` as the storage has it now (not a cached copy)."""
    return study._storage.get_trial(trial_id_of_number(study, number))


def fail_trial(storage: BaseStorage, tid: int, reason: str) -> bool:
    """Record `reason` and mark trial `tid` FAIL; False when it had finished already (another
    process got there first). Optuna's own API can only finish the trial it is running."""
    try:
        storage.set_trial_user_attr(tid, "fail_reason", reason)
        return bool(storage.set_trial_state_values(tid, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


@contextlib.contextmanager
def started_trials(study: optuna.Study) -> Iterator[list[int]]:
    """Within: the storage ids of the trials this process started on `study` (created by
    `study.ask`, or taken from its queue of waiting trials) and has not finished, in order
    (a long search keeps a short list). A signal that lands
    outside the objective (in `ask` while the sampler samples, before optuna records the
    result) leaves such a trial RUNNING with nothing to say whose it is; this list is how the
    interrupted process fails it. Optuna has no hook there: this wraps the two storage calls
    its `ask` makes, on this study's storage object only."""
    storage = study._storage
    ids: list[int] = []
    create, set_state = storage.create_new_trial, storage.set_trial_state_values

    # a signal within either call waits until its trial is listed (`interrupts.deferred`):
    # raised inside, after the row was written, it left that trial RUNNING and unlisted
    def created(*a, **k):
        with deferred():
            tid = create(*a, **k)
            ids.append(tid)
        return tid

    def state_set(trial_id, state, *a, **k):
        with deferred():
            ok = set_state(trial_id, state, *a, **k)
            if ok and state == TrialState.RUNNING and trial_id not in ids:
                ids.append(trial_id)
            elif ok and state.is_finished() and trial_id in ids:
                ids.remove(trial_id)
        return ok

    own = {name: vars(storage).get(name) for name in ("create_new_trial",
                                                      "set_trial_state_values")}
    storage.create_new_trial, storage.set_trial_state_values = created, state_set
    try:
        yield ids
    finally:
        for name, was in own.items():  # as it was: the class's method, or what was set before
            if was is None:
                delattr(storage, name)
            else:
                setattr(storage, name, was)


def innermost(storage) -> object:
    """The storage under optuna's wrappers (the RDB cache, the journal's backend)."""
    while not hasattr(storage, "url") and hasattr(storage, "_backend"):
        storage = storage._backend
    return storage


def journal_op_codes() -> set[int] | None:
    """The operation codes this optuna's journal storage knows (None: it does not say)."""
    try:
        from optuna.storages.journal._storage import JournalOperation
    except ImportError:
        return None
    return {int(op) for op in JournalOperation}


class StaleAwareRDBStorage(RDBStorage):
    """`RDBStorage` that calls `on_stale(trial_ids)` when its heartbeat check finds trials
    whose worker stopped beating, before optuna marks them FAIL (a finished trial's attributes
    can no longer be set). Optuna has no hook there: this overrides a private method."""

    def on_stale(self, trial_ids: list[int]) -> None:  # pragma: no cover - overridden
        pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        ids = super()._get_stale_trial_ids(study_id)
        self.on_stale(ids)
        return ids
