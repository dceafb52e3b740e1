"""The per-trial objective of a search: sample → build → cost → constraints → train (report,
prune) → value(s), with the trial's records (architecture, cost, configuration, scores,
artifacts). `nas_attn.searching.oneshot.objective` scores placements on a supernet instead of
training them.

Library code: it prints nothing. Progress goes to an optional `listener` (the CLI's live view).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Protocol

import optuna

from ..architecture.description import UNetArch
from ..interrupts import reason as interrupt_reason, surfaced
from ..errors import (
    ArchError,
    DiskFullError,
    DivergedError,
    NasAttnError,
    OutOfMemoryError,
    StudyError,
)
from ..paths import inside
from .cost import measure_cost
from .sampling import DataInfo, sample_arch, sample_training
from .space import Space
from .study import is_storage_error, storage_error

KEEP_EXPORTS = 3
"""A completed trial that ranks among the best this many gets its model.py as an artifact."""
class Listener(Protocol):
    def trial_started(self, number: int, arch: UNetArch, label: str | None) -> None: ...
    def epoch_done(self, number: int, epoch: int, metrics: dict) -> None: ...
    def trial_done(self, trial: optuna.trial.FrozenTrial) -> None: ...


class _Quiet:
    def trial_started(self, number, arch, label): pass
    def epoch_done(self, number, epoch, metrics): pass
    def trial_done(self, trial): pass


def _key(arch: UNetArch, train_overrides: dict) -> str:
    blob = json.dumps({"arch": arch.to_dict(), "train": train_overrides}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _patch_shape(data_cfg, train_data) -> tuple[int, ...]:
    """The training patch, by the data package's one rule (a single number means every axis;
    none: the smallest sample), so the cost is measured on what training sees."""
    from ..data.loaders import resolve_patch

    return resolve_patch(data_cfg.patch_size or None, train_data)


class Objective:
    """Sample → build → cost → constraints → train (report, prune) → value(s)."""

    latency_reps = 5
    """Timed forward passes behind a trial's `latency_ms` (the least of them is kept)."""
    gc_after_trial = True
    """Collect garbage after each trial (worth it after a training, not after a scoring)."""

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
        self.noise = None
        """The data's noise record (`nas_attn.stats.noise`), when one is stored: a trial's
        interval then counts the seed-to-seed spread it measured."""
        self._check_smallest_fits()

    def _check_smallest_fits(self) -> None:
        """A space whose smallest candidate (least depth and width, no attention, batch 1)
        cannot train on this device even by the lower bound of `architecture.footprint` is refused
        with one line before a study is made for it; larger candidates that do not fit are
        pruned one by one (`_measure`)."""
        from ..architecture.description import UNetArch
        from ..device import Runtime

        m, i = self.space.macro, self.info
        depth, base = min(m.depth), min(m.base_width)
        arch = UNetArch(spatial_dims=i.spatial_dims, in_channels=i.in_channels,
                        classes=i.classes, aux_channels=i.aux_channels, depth=depth,
                        widths=m.widths(depth, base))
        runtime = Runtime.create(self.device, spatial_dims=i.spatial_dims)
        try:
            runtime.check_fits(arch, self.patch, 1)
        except OutOfMemoryError as e:
            raise OutOfMemoryError(f"even the smallest candidate of the space: {e}") from None

    # ------------------------------------------------------------------------------------
    def train_config(self, overrides: dict):
        from ..training import TrainConfig

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
            with surfaced():  # an error that hides a signal is the signal
                if "worker" not in trial.user_attrs:  # who runs it: a resume fails it once gone
                    from .heartbeat import tag_trial

                    tag_trial(trial)
                return self._run(trial)
        except KeyboardInterrupt:
            # also when Ctrl-C lands before training starts (sampling, the cost probe): optuna
            # fails the trial either way, and the reason says why; the signal is on its way up,
            # so it is not delivered again while that record is written
            from ..interrupts import acknowledge

            acknowledge()
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", interrupt_reason())
            raise
        except Exception as e:
            if isinstance(e, optuna.TrialPruned):
                raise
            if not isinstance(e, DiskFullError) and not is_storage_error(e):
                # an error the objective did not foresee: the trial still says why it failed
                with contextlib.suppress(Exception):
                    if not trial.user_attrs.get("fail_reason"):
                        first = str(e).splitlines()[0][:300] if str(e) else ""
                        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {first}")
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
        from ..training import train

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
            note_arch(trial, arch, cost.as_dict())
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
            trial.set_user_attr("fail_reason", interrupt_reason())
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
        overrides = self._training_overrides(trial)
        key = _key(arch, overrides)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_summary", arch.summary())
        trial.set_user_attr("config_key", key)
        return arch, overrides, self._duplicate(trial, key)

    def _training_overrides(self, trial) -> dict[str, Any]:
        return sample_training(trial, self.space)

    def _repeat(self, trial, dup):
        """The result of an earlier trial of the same configuration, not trained again."""
        trial.set_user_attr("duplicate_of", dup.number)
        for k in ("params", "flops", "activation_mb", "latency_ms", "dice", "iou", "curve",
                  "train_config", "data_config", "val_cases", "dice_ci", "dice_ci_noise"):
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
            curve.append({"epoch": epoch, **{k: finite_or_none(v) for k, v in metrics.items()
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
        from .scores import record_scores

        record_scores(trial, best, self.noise)
        trial.set_user_attr("iou", finite_or_none(best.get("iou", math.nan)))
        trial.set_user_attr("best_epoch", int(best.get("epoch", -1)))
        trial.set_user_attr("train_seconds", round(float(result.seconds), 2))
        if result.checkpoint is not None:
            trial.set_user_attr("checkpoint", str(Path(result.checkpoint).resolve()))
        from .curves import save_curve

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
        from ..architecture.builder import build_unet

        seed_everything(cfg.seed, deterministic=cfg.deterministic)
        runtime = Runtime.create(self.device, amp=cfg.amp, channels_last=cfg.channels_last,
                                 spatial_dims=arch.spatial_dims)
        runtime.reset_peak_memory()
        runtime.check_fits(arch, self.patch, cfg.batch_size)  # before anything is allocated
        model = None
        try:
            model = build_unet(arch)
            return runtime, measure_cost(model, arch, self.patch, batch_size=cfg.batch_size,
                                         runtime=runtime, seed=cfg.seed,
                                         latency_reps=self.latency_reps)
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
            from ..exporting import export_arch

            meta = {"score_dice": dice, **cost.as_dict(), "study": self.study_name,
                    "trial": trial.number}
            files.append(export_arch(arch, out_dir / "export", meta=meta)["model"])
        for p in files:
            if p.exists():
                upload_artifact(artifact_store=self.artifact_store, file_path=str(p),
                                study_or_trial=trial)


def note_arch(trial, arch: UNetArch, cost: dict) -> None:
    """The architecture as a markdown note, shown on the trial's page in optuna-dashboard."""
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard is optional at run time
        return
    from .report import arch_markdown

    save_note(trial, arch_markdown(arch, cost))


def finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
