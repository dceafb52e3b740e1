"""Fault handling on the storage: heartbeats, failing dead workers' trials, bounded retries.

On RDB storages (SQLite, PostgreSQL, MySQL) every running trial records a heartbeat every
`interval` seconds (Optuna's heartbeat thread). When a worker dies (kill -9, the OOM killer, a
node reboot) its trial stops beating; the next worker that starts a trial finds it stale after
`grace` seconds, records why in the trial's `fail_reason`, marks it FAIL, and Optuna's
`RetryHeartbeatStaleTrialCallback` enqueues the same parameters again (at most `max_retry`
times). The retry resumes from the dead trial's last epoch (see `resume_checkpoint`).

Journal files have no heartbeat: there, the `nas-attn search --workers N` parent, which knows
when one of its workers dies, does the same (`fail_dead_trial`).

Defaults: interval 30 s, grace 120 s, 2 retries. Set with `--heartbeat-interval`,
`--grace-period`, `--max-retry`, or the environment variables `NAS_ATTN_HEARTBEAT_INTERVAL`,
`NAS_ATTN_GRACE_PERIOD`, `NAS_ATTN_MAX_RETRY` (inherited by worker processes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..errors import StudyError
from ..paths import inside
from . import optuna_adapter as OA

ENV_INTERVAL = "NAS_ATTN_HEARTBEAT_INTERVAL"
ENV_GRACE = "NAS_ATTN_GRACE_PERIOD"
ENV_RETRY = "NAS_ATTN_MAX_RETRY"


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: int = 30
    """Seconds between heartbeats of a running trial."""
    grace: int = 120
    """Seconds without a heartbeat after which a running trial counts as dead."""
    max_retry: int = 2
    """How many times the configuration of a dead trial is run again."""

    @classmethod
    def from_env(cls) -> "HeartbeatConfig":
        d = cls()

        def get(name: str, default: int, low: int) -> int:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                value = low - 1
            if value < low:
                flag = {ENV_INTERVAL: "--heartbeat-interval", ENV_GRACE: "--grace-period",
                        ENV_RETRY: "--max-retry"}[name]
                raise StudyError(f"{flag} (or {name}) {raw!r} is not accepted; give an "
                                 f"integer >= {low}")
            return value

        interval = get(ENV_INTERVAL, d.interval, 1)
        grace = get(ENV_GRACE, max(d.grace, 2 * interval), 1)
        if grace <= interval:
            raise StudyError(f"--grace-period {grace} must be larger than --heartbeat-interval "
                             f"{interval} (a live worker would be taken for dead)")
        return cls(interval=interval, grace=grace, max_retry=get(ENV_RETRY, d.max_retry, 0))


def set_heartbeat_env(interval: int | None, grace: int | None, max_retry: int | None) -> None:
    """Make CLI options the defaults of this process and of the workers it starts."""
    for name, value in ((ENV_INTERVAL, interval), (ENV_GRACE, grace), (ENV_RETRY, max_retry)):
        if value is not None:
            os.environ[name] = str(value)
    HeartbeatConfig.from_env()  # validate now: one clear line instead of a failing worker


class RetryDeadTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, with the reason kept on the retry and bookkeeping attributes of
    the dead run (its failure reason, curve and checkpoint) not passed on as the retry's own."""

    def __init__(self, max_retry: int):
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        ua = dict(trial.user_attrs)
        reason = ua.pop("fail_reason", None)
        for k in ("curve", "checkpoint", "dice", "iou", "best_epoch", "train_seconds"):
            ua.pop(k, None)
        ua["retry_of"] = trial.number
        if reason:
            ua["retry_reason"] = reason
        clean = optuna.trial.FrozenTrial(
            number=trial.number, state=trial.state, value=None, datetime_start=None,
            datetime_complete=None, params=trial.params, distributions=trial.distributions,
            user_attrs=ua, system_attrs=dict(trial.system_attrs), intermediate_values={},
            trial_id=OA.trial_id(trial), values=None)
        super().__call__(study, clean)


class HeartbeatRDBStorage(OA.StaleAwareRDBStorage):
    """`RDBStorage` that writes why a stale trial failed before Optuna marks it FAIL (a finished
    trial's attributes can no longer be set), and skips a heartbeat it cannot write."""

    def record_heartbeat(self, trial_id: int) -> None:
        # Optuna's heartbeat thread dies with a traceback on a storage error (a full disk under
        # SQLite); a missed beat is harmless, and the trial's own writes report the storage
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError:
            pass

    def on_stale(self, trial_ids: list[int]) -> None:
        for trial_id in trial_ids:
            try:
                self.set_trial_user_attr(
                    trial_id, "fail_reason",
                    f"worker stopped: no heartbeat for over {self.grace_period} s "
                    f"(killed, out of memory, stopped by a full disk or its machine went "
                    f"down)")
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first


def rdb_storage(url: str, hb: HeartbeatConfig | None = None) -> RDBStorage:
    hb = hb or HeartbeatConfig.from_env()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith(("postgresql", "mysql")):
        engine_kwargs["pool_pre_ping"] = True  # a server restart must not break idle workers
    return HeartbeatRDBStorage(
        url, engine_kwargs=engine_kwargs, heartbeat_interval=hb.interval,
        grace_period=hb.grace, heartbeat_stale_trial_callback=RetryDeadTrial(hb.max_retry))


def fail_dead_trial(study: optuna.Study, number: int, reason: str,
                    max_retry: int | None = None) -> bool:
    """A supervisor saw the worker running trial `number` die: record `reason`, mark the trial
    FAIL and enqueue its retry. False when the trial had already finished (e.g. the heartbeat
    check of another worker got there first)."""
    storage = OA.storage_of(study)
    trial_id = OA.trial_id_of_number(study, number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if max_retry is None:
        max_retry = HeartbeatConfig.from_env().max_retry
    RetryDeadTrial(max_retry)(study, storage.get_trial(trial_id))
    return True


def worker_tag() -> str:
    """`host:pid` of this process, the user attribute `worker` of every trial it runs."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def boot_id() -> str:
    """This machine's boot id (Linux; empty elsewhere): two machines that share a host name
    (containers) are told apart by it, so a resume never fails a live trial of another one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def tag_trial(trial: optuna.Trial) -> None:
    """Record which process runs `trial` (`worker`, `worker_boot`)."""
    trial.set_user_attr("worker", worker_tag())
    trial.set_user_attr("worker_boot", boot_id())


def process_gone(trial) -> bool:
    """A RUNNING trial whose worker ran on this machine and is gone (what a resume fails)."""
    import socket

    tag = str(trial.user_attrs.get("worker", ""))
    where, _, pid = tag.rpartition(":")
    if where != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
        return False
    return trial.user_attrs.get("worker_boot", boot_id()) == boot_id()


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker (user attribute `worker`, `host:pid`) ran on this machine and
    is gone: FAIL with the reason, and their retry queued. Run when a search resumes, on every
    storage: a journal file has no heartbeat, and on an RDB storage the heartbeat would wait for
    the grace period; a dead worker of another machine is left to the heartbeat."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not process_gone(t):  # alive, or another machine's (left to the heartbeat)
            continue
        tag = t.user_attrs.get("worker")
        if fail_dead_trial(study, t.number, f"worker {tag} is gone (killed, out of memory, or "
                                            "its search was stopped by a full disk) and its "
                                            "trial was still RUNNING"):
            failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def resume_checkpoint(trial: optuna.Trial, runs_dir: Path, study_name: str) -> Path | None:
    """The resume state of the dead trial this trial retries, if it reached the end of an
    epoch (`train` leaves `resume.pt` behind only when its process is killed)."""
    attrs = trial.storage.get_trial_system_attrs(OA.trial_id(trial))
    failed = attrs.get("retry_history") or []
    for number in reversed(failed):  # the latest attempt got furthest
        p = inside(runs_dir, study_name, f"trial_{int(number):04d}", "resume.pt")
        if p.is_file():
            return p
    return None
