"""What stops a search, in one line: a full disk (what could not be written, what became of
the running trial, how to resume)."""
from __future__ import annotations

import contextlib

import optuna

from ..errors import DiskFullError
from . import optuna_adapter as OA
from .objective import Objective
from .study import describe_storage


def stopped_by_disk(study: optuna.Study, objective: Objective,
                    storage_failure: DiskFullError | None = None,
                    resume: str | None = None) -> DiskFullError:
    """The one line for a search stopped by a full disk: what could not be written (a file the
    objective reported, or `storage_failure`), what became of the running trial (FAIL when the
    storage could record it), and with `resume` (a command), how to go on."""
    from optuna.trial import TrialState

    first, trial = objective.disk_full or (storage_failure, objective.current)
    parts = [str(first)]
    if storage_failure is not None and storage_failure is not first:
        parts.append(f"the storage {describe_storage(OA.storage_of(study))} cannot be written "
                     "either")
    storage, state, attrs = OA.storage_of(study), None, {}
    with contextlib.suppress(Exception):  # an unreadable storage: say nothing of the trial
        if trial is not None:
            frozen = storage.get_trial(OA.trial_id(trial))
            state, attrs = frozen.state, frozen.user_attrs
    if state == TrialState.RUNNING:
        try:  # the failing write may have freed its space: record the failure if we can
            OA.fail_trial(storage, OA.trial_id(trial), str(first))
            parts.append(f"trial {trial.number} was recorded as failed")
        except Exception:  # noqa: BLE001  (the storage is on the full disk)
            when = "on this machine fails it" if attrs.get("worker") else \
                "fails it once its heartbeat is older than the grace period"
            parts.append(f"trial {trial.number} stays RUNNING in the study (a resumed search "
                         f"{when})")
    elif state == TrialState.FAIL:
        parts.append(f"trial {trial.number} was recorded as failed"
                     + ("" if attrs.get("fail_reason") else
                        " (the storage had no room for its reason)"))
    if resume:
        parts.append(f"free some space, then resume with `{resume}`")
    return DiskFullError("; ".join(parts), first.path)
