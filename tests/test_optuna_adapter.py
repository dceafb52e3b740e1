"""Each use of optuna's private API (nas_attn/searching/optuna_adapter.py) against the installed
optuna: when an optuna release moves one of them, the test that names it fails."""
from __future__ import annotations

import importlib
import logging

import optuna
from optuna.trial import TrialState

from nas_attn.searching import optuna_adapter as OA


def _study(tmp_path, name="s"):
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'o.db'}")


def test_storage_ids_and_trials_by_number(tmp_path):
    study = _study(tmp_path)
    t0 = study.ask()
    study.tell(t0, 0.5)
    t1 = study.ask()
    storage = OA.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert OA.study_id(study) == storage.get_study_id_from_name("s")
    assert OA.trial_id(t1) == OA.trial_id_of_number(study, 1)
    frozen = OA.frozen_of_number(study, 0)
    assert frozen.number == 0 and frozen.value == 0.5 and OA.trial_id(frozen) == OA.trial_id(t0)


def test_fail_trial_fails_a_running_trial_once(tmp_path):
    study = _study(tmp_path)
    t = study.ask()
    storage = OA.storage_of(study)
    assert OA.fail_trial(storage, OA.trial_id(t), "gone")
    frozen = OA.frozen_of_number(study, 0)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["fail_reason"] == "gone"
    assert not OA.fail_trial(storage, OA.trial_id(t), "again")


def test_innermost_reaches_the_url_under_the_cache(tmp_path):
    study = _study(tmp_path)
    assert OA.innermost(OA.storage_of(study)).url.startswith("sqlite:///")


def test_journal_op_codes_are_named():
    codes = OA.journal_op_codes()
    assert codes is not None and 0 in codes and len(codes) >= 10


def test_the_optimize_logger_exists():
    module = importlib.import_module(OA.OPTIMIZE_LOGGER)
    assert logging.getLogger(OA.OPTIMIZE_LOGGER).name == module.__name__


def test_stale_trials_reach_the_hook(tmp_path):
    seen = []

    class Storage(OA.StaleAwareRDBStorage):
        def on_stale(self, trial_ids):
            seen.extend(trial_ids)

    storage = Storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(OA.trial_id(trial))
    import time

    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    assert seen == [OA.trial_id(trial)]
    assert study.trials[0].state == TrialState.FAIL


def test_started_trials_lists_what_this_process_started_and_puts_the_storage_back(tmp_path):
    study = _study(tmp_path)
    storage = OA.storage_of(study)
    study.enqueue_trial({"x": 1.0})  # a queued trial, taken by `ask`
    before = study.ask()
    with OA.started_trials(study) as ids:
        popped = study.ask()
        created = study.ask()
        finished = study.ask()
        study.tell(finished, 0.0)  # finished: off the list
    after = study.ask()
    assert ids == [OA.trial_id(popped), OA.trial_id(created)]
    assert OA.trial_id(finished) not in ids
    assert OA.trial_id(before) not in ids and OA.trial_id(after) not in ids
    assert "create_new_trial" not in vars(storage)
    assert "set_trial_state_values" not in vars(storage)
