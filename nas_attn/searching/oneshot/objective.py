"""Phase 2 of a one-shot search: an Optuna trial samples a placement, whose score is the
validation Dice of that path of the trained supernet (inherited weights) after its BatchNorm
statistics are re-estimated on a few training batches. Seconds per placement, not minutes.

Trials record what per-trial search records (architecture JSON and summary, cost, constraints,
train and data configuration) plus `inherited_dice`, so `show`, the dashboard, `finalize` and
`export` read them unchanged.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna

from ...architecture.description import UNetArch
from ...errors import OutOfMemoryError, StudyError
from ...paths import inside
from ..objective import Objective, finite_or_none
from ..sampling import recipe_default
from .choices import (
    Unit,
    discrete_space,
    macro_arch,
    macro_plan,
    site_specs,
    split_groups,
)
from .costs import PlacementCosts
from .supernet import SuperNet, recalibrate_bn


def training_defaults(space) -> dict[str, Any]:
    """Searched training settings at the recipe's defaults (one supernet, one recipe); fixed
    ones as the space gives them."""
    out = {}
    for k, v in space.training.items():
        if isinstance(v, list) and len(v) == 1:
            out[k] = v[0]
        elif isinstance(v, list) or hasattr(v, "low"):
            out[k] = recipe_default(k, v)
        else:
            out[k] = v
    return out


class OneShotObjective(Objective):
    """`Objective` whose trials score a placement on a trained supernet instead of training."""

    gc_after_trial = False  # a scoring leaves no graph behind; a full collection costs ~0.3 s

    def __init__(self, space, data_cfg, runs_dir: Path, study_name: str, device=None,
                 listener=None, artifact_store=None):
        super().__init__(space, data_cfg, runs_dir, study_name, device, listener,
                         artifact_store)
        self.space, self.notes = discrete_space(space)
        self.plan = macro_plan(self.space)
        if self.plan.note:
            self.notes.append(self.plan.note)
        self.overrides = training_defaults(self.space)
        searched = [k for k, v in self.space.training.items()
                    if isinstance(v, list) and len(v) > 1 or hasattr(v, "low")]
        if searched:
            self.notes.append("one-shot: training settings are not searched (one supernet, one "
                              "recipe); " + ", ".join(f"{k}={self.overrides[k]}"
                                                      for k in searched))
        uses_latency = "latency_ms" in self.space.objectives or \
            self.space.constraints.max_latency_ms is not None
        self.latency_reps = 5 if uses_latency else 1  # the figure is shown, not used
        self._nets: dict[str, tuple[SuperNet, Any]] = {}
        self._costs: dict[str, PlacementCosts] = {}
        self._units: list[Unit] | None = None
        self._batches: dict[str, list] = {}

    # ----- the supernets of this space -----------------------------------------------------
    def macros(self) -> list[UNetArch]:
        """The plain UNet of every macro combination that gets a supernet."""
        return [macro_arch(self.space, self.info, combo, self.plan.fixed)
                for combo in self.plan.combos]

    def choices(self, macro: UNetArch):
        return site_specs(self.space, macro)

    def units(self) -> list[Unit]:
        """The supernets phase 2 scores on: one per macro, or its few-shot split
        (`search.oneshot.split`)."""
        if self._units is None:
            k = self.space.search.oneshot.split
            out = []
            for macro in self.macros():
                choices = self.choices(macro)
                sp = split_groups(choices, SuperNet(macro, choices).choice_parameters(), k)
                if sp is None:
                    out.append(Unit(macro, choices))
                    continue
                site, groups = sp
                out += [Unit(macro, {**choices, site: specs}, site, g)
                        for g, specs in enumerate(groups)]
            self._units = out
        return self._units

    def unit_of(self, arch: UNetArch) -> Unit:
        unit = next((u for u in self.units() if u.holds(arch)), None)
        if unit is None:
            raise StudyError(f"no supernet holds {arch.summary()}")
        return unit

    def base_unit(self, unit: Unit) -> Unit:
        """The shared supernet a split unit starts from."""
        return Unit(unit.macro, self.choices(unit.macro))

    def supernet_dir(self, unit: Unit) -> Path:
        from ...paths import inside
        from .phase1 import supernet_tag

        return inside(self.runs_dir, self.study_name, "supernet", supernet_tag(unit))

    def supernet(self, arch: UNetArch, cfg):
        """The trained supernet holding `arch` (loaded once) on this objective's device."""
        from ...device import Runtime
        from .phase1 import load_supernet, supernet_tag

        unit = self.unit_of(arch)
        key = supernet_tag(unit)
        if key not in self._nets:
            runtime = Runtime.create(self.device, amp=cfg.amp, channels_last=cfg.channels_last,
                                     spatial_dims=arch.spatial_dims)
            net = load_supernet(self.supernet_dir(unit), unit)
            self._nets[key] = (runtime.prepare_model(net).eval(), runtime)
        return self._nets[key]

    def calibration_batches(self, cfg, runtime) -> list:
        """The same `recalibration_batches` training batches (augmented patches, the recipe's
        batch size and seed) for every placement, kept on the device."""
        from ...training.loop import get_loaders

        key = f"{cfg.batch_size}/{cfg.seed}"
        if key not in self._batches:
            n = self.space.search.oneshot.recalibration_batches
            train_loader, _ = get_loaders(
                self.train_data, self.val_data, self.data_cfg, batch_size=cfg.batch_size,
                seed=cfg.seed, device_is_cuda=runtime.is_cuda,
                samples_per_epoch=max(n * cfg.batch_size, cfg.batch_size))
            batches = []
            while len(batches) < n:
                for b in train_loader:
                    batches.append(runtime.to_device(b))
                    if len(batches) == n:
                        break
            self._batches[key] = batches
        return self._batches[key]

    def plain_paths(self) -> list[dict[str, Any]]:
        """The inherited score of each supernet's plain path (every site empty: the plain UNet
        of its macro), where the space allows `none` at every site: what the search summary and
        `show` compare the best placement with on the same supernet, so that the gain they
        print is not a gain of width. One scoring per macro (seconds)."""
        cfg = self.train_config(dict(self.overrides))
        out = []
        for macro in self.macros():
            if not any(u.holds(macro) and all(spec in u.choices[site]
                                              for site, spec in macro.sites())
                       for u in self.units()):
                continue
            metrics = self.score(macro, cfg)
            out.append({"arch": macro.to_json(), "summary": macro.summary(),
                        "dice": float(metrics["dice"]), "cases": metrics.get("cases")})
        return out

    def score(self, arch: UNetArch, cfg) -> dict[str, Any]:
        """Validation metrics of `arch`'s path with inherited weights and recalibrated
        BatchNorm statistics."""
        net, runtime = self.supernet(arch, cfg)
        return self.score_path(net, runtime, arch, cfg)

    def score_path(self, net: SuperNet, runtime, arch: UNetArch, cfg) -> dict[str, Any]:
        """`score` on a given supernet (on `runtime`'s device) that holds `arch`'s path."""
        net.set_path(arch)
        recalibrate_bn(net, self.calibration_batches(cfg, runtime), runtime)
        return self.validate(net, runtime, arch, cfg)

    def validate(self, net: SuperNet, runtime, arch: UNetArch, cfg) -> dict[str, Any]:
        """The tool's validation metrics of the path `net` is set to, as it stands."""
        from ...training.loop import get_loaders
        from ...training.validation import eval_patch, evaluate

        _, val_loader = get_loaders(self.train_data, self.val_data, self.data_cfg,
                                    batch_size=cfg.batch_size, seed=cfg.seed,
                                    device_is_cuda=runtime.is_cuda)
        return evaluate(net, val_loader, runtime, classes=arch.classes,
                        patch_size=eval_patch(self.data_cfg, self.train_data),
                        overlap=cfg.val_overlap)

    def _measure(self, arch: UNetArch, cfg):
        """The placement's runtime and cost: parameters, FLOPs and activation memory added up
        from probes of its modules (`PlacementCosts`, exact), latency timed on its path of
        the supernet. A placement too large for the device is refused as in `Objective`."""
        from ...device import Runtime, is_oom, release_memory
        from ..cost import measure_latency

        runtime = Runtime.create(self.device, amp=cfg.amp, channels_last=cfg.channels_last,
                                 spatial_dims=arch.spatial_dims)
        runtime.reset_peak_memory()
        runtime.check_fits(arch, self.patch, cfg.batch_size)
        key = f"{cfg.batch_size}/{cfg.seed}/{cfg.amp}/{cfg.channels_last}"
        if key not in self._costs:
            self._costs[key] = PlacementCosts(lambda a: Objective._measure(self, a, cfg)[1])
        net, net_runtime = self.supernet(arch, cfg)
        net.set_path(arch)
        try:
            latency = measure_latency(net, arch, self.patch, batch_size=cfg.batch_size,
                                      runtime=net_runtime, reps=self.latency_reps,
                                      seed=cfg.seed)
        except Exception as e:  # out of memory: pruned with its reason, as in `Objective`
            if not is_oom(e):
                raise
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            release_memory(e, net_runtime)
            raise OutOfMemoryError(f"while timing {arch.summary()} at batch_size "
                                   f"{cfg.batch_size} on {net_runtime.device}: {msg}") from None
        return runtime, self._costs[key](arch, latency)

    # ----- the trial ----------------------------------------------------------------------
    def _training_overrides(self, trial) -> dict[str, Any]:
        return dict(self.overrides)

    in_flight_wait_s = 30.0
    """How long a trial waits for another process that is scoring the same placement."""

    def _duplicate(self, trial, key: str):
        """An earlier trial of the same placement: a finished one, or (with worker processes)
        one with a lower number that is being scored right now, waited for (`in_flight`)."""
        dup = super()._duplicate(trial, key)
        if dup is None:
            dup = in_flight(trial.study, trial.number, key, self.in_flight_wait_s)
        return dup

    def _run(self, trial: optuna.Trial):
        label = trial.user_attrs.get("baseline")
        arch, overrides, dup = self._sample(trial)
        if dup is not None:
            return self._repeat(trial, dup)
        self.listener.trial_started(trial.number, arch, label)
        cfg = self.train_config(overrides)
        trial.set_user_attr("train_config", cfg.model_dump(mode="json"))
        trial.set_user_attr("data_config", self.data_cfg.model_dump(mode="json"))
        trial.set_user_attr("strategy", "oneshot")
        _, cost = self._measure(arch, cfg)
        for k, v in cost.as_dict().items():
            trial.set_user_attr(k, v)
        broken = cost.violations(self.space.constraints)
        if broken:  # pruned before it is scored
            reason = "constraint: " + "; ".join(broken)
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
        t0 = time.perf_counter()
        metrics = self.score(arch, cfg)
        dice = float(metrics["dice"])
        from .phase1 import supernet_tag

        trial.set_user_attr("supernet", supernet_tag(self.unit_of(arch)))
        for k, v in (("dice", dice), ("inherited_dice", dice),
                     ("iou", finite_or_none(float(metrics.get("iou", float("nan"))))),
                     ("score_seconds", round(time.perf_counter() - t0, 3))):
            trial.set_user_attr(k, v)
        from ..scores import record_scores

        record_scores(trial, metrics, self.noise)
        self.listener.epoch_done(trial.number, 0, {"dice": dice})
        from ..objective import note_arch

        note_arch(trial, arch, cost.as_dict())
        out_dir = inside(self.runs_dir, self.study_name, f"trial_{trial.number:04d}")
        self._artifacts(trial, out_dir, arch, dice, cost)
        values = [dice] + [float(getattr(cost, o)) for o in self.space.objectives[1:]]
        return values[0] if len(values) == 1 else tuple(values)


def in_flight(study: optuna.Study, number: int, key: str, wait_s: float):
    """The trial with a lower number than `number` that holds placement `key` and is RUNNING
    (another worker is scoring it), once it has finished (COMPLETE or PRUNED), so that trial
    `number` repeats its result instead of scoring the placement a second time (and counting it
    twice). None when there is none, when it failed, or after `wait_s` (a dead worker's trial
    stays RUNNING): the placement is then scored here. Only a lower number is waited for, so
    two trials of one placement never wait for each other. A scoring takes seconds."""
    from .. import optuna_adapter as OA

    running = optuna.trial.TrialState.RUNNING
    first = next((t for t in study.get_trials(deepcopy=False, states=(running,))
                  if t.number < number and t.user_attrs.get("config_key") == key), None)
    if first is None:
        return None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        t = OA.frozen_of_number(study, first.number)
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            return t
        if t.state != running:
            return None
    return None
