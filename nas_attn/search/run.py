"""Running a search: the per-trial objective and the study loop.

Library code: it prints nothing. Progress goes to an optional `listener` (the CLI's live view).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
import yaml
from optuna.artifacts import FileSystemArtifactStore

from ..arch import UNetArch
from ..atomic import atomic_file
from ..paths import check_name, inside
from ..errors import (ArchError, DiskFullError, DivergedError, NasAttnError, OutOfMemoryError,
                      StudyError)
from .cost import measure_cost
from .sampling import DataInfo, baseline_params, sample_arch, sample_training
from .space import Space, load_space, resolve_space_path
from .study import (DEFAULT_RUNS, describe_storage, is_storage_error, make_pruner,
                    make_sampler, open_storage, storage_error, storage_errors, study_names)

if TYPE_CHECKING:
    from ..data import DataConfig

KEEP_EXPORTS = 3
"""A completed trial that ranks among the best this many gets its model.py as an artifact."""
DIRECTIONS = {"dice": "maximize", "params": "minimize", "flops": "minimize",
              "latency_ms": "minimize"}


class Listener(Protocol):
    def trial_started(self, number: int, arch: UNetArch, label: str | None) -> None: ...
    def epoch_done(self, number: int, epoch: int, metrics: dict) -> None: ...
    def trial_done(self, trial: optuna.trial.FrozenTrial) -> None: ...


class _Quiet:
    def trial_started(self, number, arch, label): pass
    def epoch_done(self, number, epoch, metrics): pass
    def trial_done(self, trial): pass


@dataclass
class SearchRequest:
    space: str | Path = "default"
    data: str | None = None
    """Overrides the space's data source (a folder path, `builtin` or `builtin3d`)."""
    val_pattern: str | None = None
    """Overrides the space's data.val_pattern (glob on sample names for validation)."""
    test_pattern: str | None = None
    """Glob on sample names held out as the test split (never trained or chosen on)."""
    test_data: str | None = None
    """A separate test folder, recorded with the study for `finalize`."""
    trials: int | None = None
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    runs_dir: Path = DEFAULT_RUNS
    device: str | None = None
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    num_workers: int | None = None
    """Overrides the space's data.num_workers (training loader workers)."""
    notes: list[str] = field(default_factory=list)

    def resume_command(self, study_name: str) -> str:
        """The command that resumes `study_name` where this request found it: with its
        --storage and --runs-dir when they are not the defaults (without them the command
        would open the default storage and start a new study)."""
        cmd = f"nas-attn search --study {study_name}"
        if self.storage is not None:
            cmd += f" --storage {self.storage}"
        if Path(self.runs_dir) != Path(DEFAULT_RUNS):
            cmd += f" --runs-dir {self.runs_dir}"
        return cmd


def artifact_dir_for(runs_dir: Path) -> Path:
    """One artifact store for every study of a runs folder (what the dashboard serves)."""
    return (Path(runs_dir) / "artifacts").resolve()


class AtomicArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each artifact under a temporary name (its
    own writes in place: a full disk left a truncated artifact behind)."""

    def write(self, artifact_id: str, content_body) -> None:
        with atomic_file(self._get_filepath(artifact_id)) as f:
            shutil.copyfileobj(content_body, f)


def _key(arch: UNetArch, train_overrides: dict) -> str:
    blob = json.dumps({"arch": arch.to_dict(), "train": train_overrides}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


METRIC_NAMES = {"dice": "val Dice (per class, pooled)", "params": "parameters",
                "flops": "FLOPs", "latency_ms": "latency (ms)"}


def data_config(space: Space, source: str | None, val_pattern: str | None = None,
                test_pattern: str | None = None, test_data: str | None = None,
                num_workers: int | None = None):
    from ..data import DataConfig

    cfg = dict(space.data)
    if num_workers is not None:
        cfg["num_workers"] = num_workers
    for key, value in (("source", source), ("val_pattern", val_pattern),
                       ("test_pattern", test_pattern), ("test_source", test_data)):
        if value:
            cfg[key] = value
    return DataConfig(**cfg)


def _patch_shape(data_cfg, train_data) -> tuple[int, ...]:
    if data_cfg.patch_size:
        return tuple(data_cfg.patch_size)
    return tuple(train_data.images[0].shape[1:])


class Objective:
    """Sample → build → cost → constraints → train (report, prune) → value(s)."""

    def __init__(self, space: Space, data_cfg, runs_dir: Path, study_name: str,
                 device: str | None = None, listener: Listener | None = None,
                 artifact_store=None):
        from ..data import load_data
        from ..device import select_device

        self.space = space
        self.data_cfg = data_cfg
        self.train_data, self.val_data = load_data(data_cfg)  # decoded once, reused every trial
        d = self.train_data
        self.info = DataInfo(d.spatial_dims, d.in_channels, d.classes, d.aux_channels)
        if space.spatial_dims and space.spatial_dims != d.spatial_dims:
            raise StudyError(f"the space is for {space.spatial_dims}D data but the data source "
                             f"{data_cfg.source!r} is {d.spatial_dims}D")
        self.patch = _patch_shape(data_cfg, d)
        self.device = select_device(device)
        self.runs_dir = Path(runs_dir)
        self.study_name = study_name
        self.listener = listener or _Quiet()
        self.artifact_store = artifact_store
        self.current: optuna.Trial | None = None
        """The trial whose result the storage may not have yet (`run_search` clears it)."""
        self.disk_full: tuple[DiskFullError, optuna.Trial] | None = None
        """The error and trial when a trial failed for lack of space: the search stops."""

    # ------------------------------------------------------------------------------------
    def train_config(self, overrides: dict):
        from ..train import TrainConfig

        b = self.space.budget
        # the TrainConfig recipe (warm-up of 5 epochs, capped at a quarter of the run), as in
        # finalize's retraining: a trial is a shorter run of the same recipe, not another one
        base = dict(epochs=b.epochs, device=str(self.device))
        if b.samples_per_epoch:
            base["samples_per_epoch"] = b.samples_per_epoch
        if b.max_time_s:
            base["max_time_s"] = b.max_time_s
        return TrainConfig.make(**{**base, **overrides})

    def _duplicate(self, trial, key: str):
        for t in trial.study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,
                                                optuna.trial.TrialState.PRUNED)):
            if t.number != trial.number and t.user_attrs.get("config_key") == key:
                return t
        return None

    def __call__(self, trial: optuna.Trial):
        self.current = trial
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # also when Ctrl-C lands before training starts (sampling, the cost probe): optuna
            # fails the trial either way, and the reason says why
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C)")
            raise
        except Exception as e:
            if not isinstance(e, DiskFullError) and not is_storage_error(e):
                raise
            # a full disk or a storage that cannot be written: the next trial would fail the
            # same way, so the search stops (a storage error is not caught by the optimize loop)
            if isinstance(e, DiskFullError):
                self.disk_full = (e, trial)
                trial.study.stop()
            with contextlib.suppress(Exception):  # the storage may be on the same full disk
                trial.set_user_attr("fail_reason", str(e) if isinstance(e, DiskFullError)
                                    else str(storage_error(e, trial.storage)))
            raise

    def _run(self, trial: optuna.Trial):
        from ..train import train

        space = self.space
        label = trial.user_attrs.get("baseline")
        arch, overrides, dup = self._sample(trial)
        if dup is not None:
            return self._repeat(trial, dup)

        self.listener.trial_started(trial.number, arch, label)
        out_dir = inside(self.runs_dir, self.study_name, f"trial_{trial.number:04d}")
        from .heartbeat import resume_checkpoint

        resume = resume_checkpoint(trial, self.runs_dir, self.study_name)  # a dead run's retry
        if resume is not None:
            trial.set_user_attr("resumed_from", str(resume))
        try:
            cfg = self.train_config(overrides)
            # what `train --from-study` and `finalize` replay: every field, resolved
            trial.set_user_attr("train_config", cfg.model_dump(mode="json"))
            trial.set_user_attr("data_config", self.data_cfg.model_dump(mode="json"))
            runtime, cost = self._measure(arch, cfg)
            for k, v in cost.as_dict().items():
                trial.set_user_attr(k, v)
            _note(trial, arch, cost.as_dict())
            broken = cost.violations(space.constraints)
            if broken:
                reason = "constraint: " + "; ".join(broken)
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
            curve: list[dict] = []
            on_epoch = self._epoch_callback(trial, label, curve)
            try:
                result = train(arch, self.train_data, self.val_data, self.data_cfg, cfg,
                               on_epoch=on_epoch, out_dir=out_dir, runtime=runtime,
                               resume_from=resume)
            finally:
                peak = runtime.peak_memory_mb()
                if peak is not None:
                    trial.set_user_attr("peak_gpu_mb", round(peak, 1))
        except DivergedError as e:
            trial.set_user_attr("fail_reason", f"diverged: {e}")
            raise
        except OutOfMemoryError as e:
            reason = f"out of memory: {e}"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C)")
            raise
        except DiskFullError:
            raise  # recorded by __call__
        except NasAttnError as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
            raise
        return self._finish(trial, out_dir, arch, result, curve, cost)

    def _sample(self, trial):
        """The trial's architecture, training choices and an earlier trial of the same
        configuration (None when new), recorded as user attributes."""
        try:
            arch = sample_arch(trial, self.space, self.info)
        except ArchError as e:
            trial.set_user_attr("fail_reason", f"invalid architecture: {e}")
            raise
        overrides = sample_training(trial, self.space)
        key = _key(arch, overrides)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_summary", arch.summary())
        trial.set_user_attr("config_key", key)
        return arch, overrides, self._duplicate(trial, key)

    def _repeat(self, trial, dup):
        """The result of an earlier trial of the same configuration, not trained again."""
        trial.set_user_attr("duplicate_of", dup.number)
        for k in ("params", "flops", "activation_mb", "latency_ms", "dice", "iou", "curve",
                  "train_config", "data_config"):
            if k in dup.user_attrs:
                trial.set_user_attr(k, dup.user_attrs[k])
        if dup.state == optuna.trial.TrialState.PRUNED:
            trial.set_user_attr("prune_reason", f"same configuration as pruned trial {dup.number}")
            raise optuna.TrialPruned(f"same configuration as pruned trial {dup.number}")
        return dup.values[0] if len(dup.values) == 1 else tuple(dup.values)

    def _epoch_callback(self, trial, label: str | None, curve: list[dict]):
        """Records each evaluated epoch and asks the pruner (never for a baseline)."""
        space = self.space

        def on_epoch(epoch: int, metrics: dict) -> None:
            dice = float(metrics["dice"])
            curve.append({"epoch": epoch, **{k: _num(v) for k, v in metrics.items()
                                             if isinstance(v, (int, float))}})
            trial.set_user_attr("curve", curve)
            self.listener.epoch_done(trial.number, epoch, metrics)
            if not space.multi_objective:
                trial.report(dice, epoch)
                # baselines always run to the end: they are what finalize measures against
                if label is None and trial.should_prune():
                    reason = f"pruned by {type(trial.study.pruner).__name__} after epoch " \
                             f"{epoch} (dice {dice:.4f})"
                    trial.set_user_attr("prune_reason", reason)
                    raise optuna.TrialPruned(reason)

        return on_epoch

    def _finish(self, trial, out_dir: Path, arch: UNetArch, result, curve: list[dict], cost):
        """The finished trial's scores and artifacts; its objective value(s)."""
        best = result.best
        dice = float(best["dice"])
        trial.set_user_attr("dice", dice)
        trial.set_user_attr("iou", _num(best.get("iou", math.nan)))
        trial.set_user_attr("best_epoch", int(best.get("epoch", -1)))
        trial.set_user_attr("train_seconds", round(float(result.seconds), 2))
        if result.checkpoint is not None:
            trial.set_user_attr("checkpoint", str(Path(result.checkpoint).resolve()))
        from ..curves import save_curve

        save_curve(curve or result.history, out_dir / "curve.png",
                   title=f"trial {trial.number}: {arch.summary()}")
        self._artifacts(trial, out_dir, arch, dice, cost)
        values = [dice] + [float(getattr(cost, o)) for o in self.space.objectives[1:]]
        return values[0] if len(values) == 1 else tuple(values)

    def _measure(self, arch: UNetArch, cfg):
        """The trial's runtime and its cost, measured under the training's settings (seed,
        cuDNN/TF32 policy, autocast, memory format, batch size). An out-of-memory error here
        becomes `OutOfMemoryError` (the trial is pruned with its reason) after the memory is
        given back."""
        from ..device import Runtime, is_oom, release_memory, seed_everything
        from ..unet import build_unet

        seed_everything(cfg.seed, deterministic=cfg.deterministic)
        runtime = Runtime.create(self.device, amp=cfg.amp, channels_last=cfg.channels_last,
                                 spatial_dims=arch.spatial_dims)
        runtime.reset_peak_memory()
        model = None
        try:
            model = build_unet(arch)
            return runtime, measure_cost(model, arch, self.patch, batch_size=cfg.batch_size,
                                         runtime=runtime, seed=cfg.seed)
        except Exception as e:  # only out-of-memory is handled here
            if not is_oom(e):
                raise
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            del model
            release_memory(e, runtime)
        raise OutOfMemoryError(f"while measuring the cost of {arch.summary()} at batch_size "
                               f"{cfg.batch_size} on {runtime.device}: {msg}")

    def _artifacts(self, trial, out_dir: Path, arch: UNetArch, dice: float, cost) -> None:
        """Preview, curve and, while the trial ranks in the top `KEEP_EXPORTS`, its model.py."""
        if self.artifact_store is None:
            return
        from optuna.artifacts import upload_artifact

        files = [out_dir / "preview.png", out_dir / "curve.png"]
        done = [t.values[0] for t in trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if sum(v > dice for v in done) < KEEP_EXPORTS:
            from ..export import export_arch

            meta = {"score_dice": dice, **cost.as_dict(), "study": self.study_name,
                    "trial": trial.number}
            files.append(export_arch(arch, out_dir / "export", meta=meta)["model"])
        for p in files:
            if p.exists():
                upload_artifact(artifact_store=self.artifact_store, file_path=str(p),
                                study_or_trial=trial)


def _note(trial, arch: UNetArch, cost: dict) -> None:
    """The architecture as a markdown note, shown on the trial's page in optuna-dashboard."""
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard is optional at run time
        return
    from .report import arch_markdown

    save_note(trial, arch_markdown(arch, cost))


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class SearchSession:
    """An opened study with everything needed to run trials on it."""

    study: optuna.Study
    space: Space
    space_path: Path
    created: bool
    notes: list[str]
    objective: Objective
    runs_dir: Path
    request: SearchRequest | None = None
    """The request as resolved (a resumed study's data settings filled in)."""

    def trials(self, asked: int | None = None) -> int:
        """Trials to run now: `asked`, else the space's `search.trials`."""
        return asked if asked is not None else self.space.search.trials


def open_search(req: SearchRequest, listener: Listener | None = None) -> SearchSession:
    storage = open_storage(req.storage, Path(req.runs_dir))
    with storage_errors(storage):  # e.g. a full disk under the SQLite file: one clear line
        return _open_search(req, storage, listener)


def _open_search(req: SearchRequest, storage, listener: Listener | None) -> SearchSession:
    runs_dir = Path(req.runs_dir)
    existing = study_names(storage)
    notes = list(req.notes)
    space_path = resolve_space_path(req.space)
    space = load_space(space_path)
    name = req.study or f"{space_path.stem}"
    created = name not in existing
    if created:
        check_name(name)
    if not created:
        study0 = optuna.load_study(study_name=name, storage=storage)
        stored = study0.user_attrs.get("space_yaml")
        if stored is not None and yaml.safe_load(stored) != yaml.safe_load(space_path.read_text()):
            raise StudyError(
                f"study {name!r} was created with a different search space "
                f"({study0.user_attrs.get('space_path')}); resume it with that space or choose a "
                f"new --study name")
        # a resumed study keeps its data settings unless the request gives others
        resumed = {attr: study0.user_attrs[key] for attr, key in (
            ("data", "data_override"), ("val_pattern", "val_pattern"),
            ("test_pattern", "test_pattern"), ("test_data", "test_data"))
            if getattr(req, attr) is None and study0.user_attrs.get(key)}
        req = dataclasses.replace(req, **resumed)  # a copy: the caller's request stays as it was
    artifact_dir = artifact_dir_for(runs_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    # data first: a bad folder must fail before a study is created for it
    data_cfg = data_config(space, req.data, req.val_pattern, req.test_pattern, req.test_data,
                           req.num_workers)
    if not created:
        data_cfg, note = pin_old_normalisation(study0, data_cfg)
        notes += [note] if note else []
    objective = Objective(space, data_cfg, runs_dir, name, req.device, listener,
                          AtomicArtifactStore(str(artifact_dir)))
    seed = req.seed if req.seed is not None else space.search.seed
    sampler = make_sampler(req.sampler or space.search.sampler, space, seed)
    pruner, note = make_pruner(req.pruner or space.search.pruner, space)
    if note:
        notes.append(note)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True,
        directions=[DIRECTIONS[o] for o in space.objectives])
    if created:
        study.set_user_attr("space_path", str(space_path))
        study.set_user_attr("space_yaml", space_path.read_text())
        study.set_user_attr("objectives", list(space.objectives))
        if req.data:
            study.set_user_attr("data_override", req.data)
        for attr in ("val_pattern", "test_pattern", "test_data"):
            if getattr(req, attr):
                study.set_user_attr(attr, getattr(req, attr))
    with warnings.catch_warnings():  # experimental in optuna 5; what the dashboard shows
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAMES[o] for o in space.objectives])
    study.set_user_attr("artifact_dir", str(artifact_dir))
    if not created:  # a dead run's RUNNING trial (killed, a full disk): failed and retried now
        from .heartbeat import fail_orphaned_trials

        if isinstance(storage, optuna.storages.JournalStorage):  # RDB: its heartbeat says
            fail_orphaned_trials(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    if space.search.baselines:
        enqueue_baselines(study, space, created)
    return SearchSession(study, space, space_path, created, notes, objective, runs_dir, req)


def pin_old_normalisation(study: optuna.Study, data_cfg: DataConfig
                          ) -> tuple[DataConfig, str | None]:
    """A study whose trials ran before the intensity normalisation was recorded (their
    `data_config` has no "normalisation") scaled each image by its own percentiles: its new
    trials do the same, so that they are ranked against the old ones on equal terms."""
    def trained_before(attrs) -> bool:  # (a trial pruned by a constraint never trained)
        if "data_config" in attrs:
            return "normalisation" not in attrs["data_config"]
        return "dice" in attrs or "curve" in attrs  # older still: no data_config at all

    old = [t.number for t in study.get_trials(deepcopy=False)
           if t.state.is_finished() and trained_before(t.user_attrs)]
    if not old or data_cfg.normalisation == "image":
        return data_cfg, None
    return data_cfg.model_copy(update={"normalisation": "image"}), (
        f"study {study.study_name!r}: trial(s) {', '.join(map(str, old[:5]))}"
        f"{' ...' if len(old) > 5 else ''} ran before the intensity normalisation was recorded "
        "(each image scaled by its own percentiles); new trials use the same (normalisation: "
        "image) so that all are ranked alike")


def enqueue_baselines(study: optuna.Study, space: Space, created: bool) -> list[str]:
    """Queue the baselines in a new study; in a resumed one, queue again each baseline whose
    every run failed (interrupted, a dead worker), so it is re-run rather than dropped.
    Returns the labels queued."""
    from optuna.trial import TrialState

    queued = []
    runs: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("baseline"):
            runs.setdefault(t.user_attrs["baseline"], []).append(t.state)
    for label, params in baseline_params(space):
        states = runs.get(label, [])
        if created or (states and all(s == TrialState.FAIL for s in states)):
            study.enqueue_trial(params, user_attrs={"baseline": label}, skip_if_exists=created)
            queued.append(label)
    return queued


def run_search(session: SearchSession, trials: int | None, timeout: float | None) -> optuna.Study:
    """Run trials; a diverged or otherwise failed trial is recorded and the study goes on.
    A full disk stops the search after the trial it failed, with `DiskFullError` (see
    `stopped_by_disk`): the next trial would fail the same way. A storage that cannot be
    written stops it too (`StudyError` when it is not for lack of space)."""
    listener = session.objective.listener
    optimize(session, n_trials=trials, timeout=timeout,
             callbacks=[lambda study, trial: listener.trial_done(trial)])
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
        with storage_errors(session.study._storage):
            session.study.optimize(func or objective, catch=(NasAttnError,),
                                   callbacks=[done, *callbacks], gc_after_trial=True, **kwargs)
    except DiskFullError as e:  # the storage itself could not be written
        raise stopped_by_disk(session.study, objective, e, resume) from None
    if objective.disk_full is not None:
        raise stopped_by_disk(session.study, objective, resume=resume) from None


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
        parts.append(f"the storage {describe_storage(study._storage)} cannot be written "
                     "either")
    storage, state, attrs = study._storage, None, {}
    with contextlib.suppress(Exception):  # an unreadable storage: say nothing of the trial
        if trial is not None:
            frozen = storage.get_trial(trial._trial_id)
            state, attrs = frozen.state, frozen.user_attrs
    if state == TrialState.RUNNING:
        try:  # the failing write may have freed its space: record the failure if we can
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", str(first))
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
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
