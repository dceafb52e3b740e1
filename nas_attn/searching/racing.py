"""The trainings of `finalize`'s race (`nas_attn.stats.race` decides, this module trains) and its
confirmation on fresh seeds.

Every finished training is kept in `runs/<study>/final/race.json` (written atomically after each
one) under its entrant, seed and a hash of what it ran (architecture, training and data
configuration), so a killed finalize resumes from its last finished training, and a finalize
run again with other options (another `--top`) reuses every training whose recipe is
unchanged. Each run records its per-case counts on validation and, when there is a test split,
on test (reported, never used to choose).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_write
from ..stats.counts import CaseCounts

CONFIRM_SEED0 = 100
"""Confirmation seeds are 100, 101, ...: never among the race's seeds (0, 1, ...)."""


@dataclass(frozen=True)
class Progress:
    """What the `progress` callback receives after each training."""

    index: int          # 1-based count of trainings in this call
    runs: int           # the most the race and its confirmation can train (budget + confirm)
    trial: int | None
    seed: int
    val_dice: float
    test_dice: float | None
    label: str = ""
    phase: str = "race"  # "race" or "confirm"
    val_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Arm:
    """One entrant as the runner trains it."""

    key: str
    trial: int | None
    label: str
    arch: Any
    train_options: dict[str, Any]


def recipe_hash(arm: Arm, data_options: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"arch": arm.arch.to_dict(), "train": arm.train_options,
                       "data": data_options, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Runner:
    """Trains an arm under a seed once; every finished run is kept in `race.json`."""

    def __init__(self, splits, out_root: Path, *, progress: Callable[[Progress], None] | None,
                 on_epoch: Callable | None, planned: int, seed_offset: int = 0,
                 on_step: Callable | None = None):
        self.d = splits
        self.on_step = on_step
        """`on_step(what, StepInfo)`: the training's step progress (`nas_attn.training`)."""
        self.offset = seed_offset
        """Added to every seed: a finalize repeated with another offset trains other seeds."""
        self.out_root = Path(out_root)
        self.state_file = self.out_root / "race.json"
        self.progress, self.on_epoch, self.planned = progress, on_epoch, planned
        self.done = 0
        self.records: dict[str, dict[str, Any]] = self._load()
        self.used: dict[tuple[str, int], dict[str, Any]] = {}

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            state = json.loads(self.state_file.read_text())
            return dict(state.get("runs") or {})
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self) -> None:
        self.out_root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_file, json.dumps({"format": 1, "runs": self.records}))

    def cached(self, arm: Arm, seed: int) -> dict[str, Any] | None:
        rec = self.records.get(recipe_hash(arm, self.d.cfg.model_dump(mode="json"),
                                           seed + self.offset))
        if rec and rec.get("key") == arm.key:
            self.used[(arm.key, seed)] = rec
            return rec
        return None

    def records_for(self, key: str, seed: int) -> dict[str, Any]:
        """The run of entrant `key` under `seed` this finalize used (trained or read back)."""
        return self.used[(key, seed)]

    def run(self, arm: Arm, seed: int, phase: str = "race") -> dict[str, Any]:
        """The record of `arm` trained under `seed` (trained now unless already kept)."""
        h = recipe_hash(arm, self.d.cfg.model_dump(mode="json"), seed + self.offset)
        rec = self.cached(arm, seed)
        if rec is None:
            rec = self._train(arm, seed)
            self.records[h] = rec
            self.used[(arm.key, seed)] = rec
            self._save()
            self.done += 1
            if self.progress is not None:
                from ..stats.compare import estimate

                ci = estimate([CaseCounts.from_dict(rec["val_cases"])])
                self.progress(Progress(self.done, self.planned, arm.trial, rec["seed"], rec["val"],
                                       rec["test"], arm.label, phase, (ci.low, ci.high)))
        return rec

    def _train(self, arm: Arm, seed: int) -> dict[str, Any]:
        from ..training import TrainConfig, evaluate, train
        from ..training.validation import eval_patch

        cfg = TrainConfig.make(**{**arm.train_options, "seed": seed + self.offset})
        d = self.d

        def _epoch(epoch, metrics):
            if self.on_epoch is not None:
                self.on_epoch(arm.trial, seed, epoch, metrics)

        def _step(info):
            if self.on_step is not None:
                self.on_step(f"{arm.label or 'trial ' + str(arm.trial)} seed {cfg.seed}", info)

        res = train(arm.arch, d.train, d.val, d.cfg, cfg, progress=_step,
                    out_dir=self.out_root / f"{arm.key}_seed{cfg.seed}", on_epoch=_epoch)
        test = None
        if d.test_loader is not None:
            test = evaluate(res.model, d.test_loader, res.runtime, classes=arm.arch.classes,
                            patch_size=eval_patch(d.cfg, d.train), overlap=cfg.val_overlap)
        return {"key": arm.key, "trial": arm.trial, "label": arm.label, "seed": cfg.seed,
                "val": float(res.best["dice"]), "val_cases": res.best["cases"],
                "test": None if test is None else float(test["dice"]),
                "test_cases": None if test is None else test["cases"],
                "best_epoch": int(res.best.get("epoch", -1)),
                "checkpoint": str(res.checkpoint) if res.checkpoint else None,
                "seconds": round(res.seconds, 1),
                "train_config": cfg.model_dump(mode="json", exclude={"seed"})}


def counts_of(records: list[dict[str, Any]], split: str = "val") -> list[CaseCounts] | None:
    """The per-case counts of these runs on a split (None when any run has none)."""
    out = [r.get(f"{split}_cases") for r in records]
    if not out or any(c is None for c in out):
        return None
    return [CaseCounts.from_dict(c) for c in out]


def drive(race, arms: dict[str, Arm], runner: Runner, on_round: Callable | None = None):
    """Run the race to its end: what `race.replay()` asks for is trained (or read back from
    `race.json`), round after round. Returns the final `Plan`."""
    for key, arm in arms.items():  # what an earlier (killed or shorter) finalize finished
        for seed in range(race.max_seeds):
            rec = runner.cached(arm, seed)
            if rec is not None:
                race.add(key, seed, CaseCounts.from_dict(rec["val_cases"]))
    told = 0
    while True:
        plan = race.replay()
        for rnd in plan.rounds[told:]:
            if on_round is not None:
                on_round(rnd)
        told = len(plan.rounds)
        if not plan.pending:
            return plan
        for key, seed in plan.pending:
            rec = runner.run(arms[key], seed)
            race.add(key, seed, CaseCounts.from_dict(rec["val_cases"]))


def confirm(race, plan, arms: dict[str, Arm], runner: Runner, seeds: int) -> dict | None:
    """The champion (the race's best attention entrant), the plain UNet of its size and the
    Attention U-Net baseline trained under `seeds` fresh seeds that took no part in choosing
    the champion: what the verdict is decided on (None without a champion or with 0 seeds)."""
    champion = race.champion(plan)
    if champion is None or seeds == 0:
        return None
    plain = race.entrants[champion].plain_key
    gate = next((k for k, e in race.entrants.items() if e.label == "attention_unet"
                 and k != champion), None)
    keys = [k for k in (champion, plain, gate) if k is not None]
    chosen = [CONFIRM_SEED0 + i for i in range(seeds)]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for seed in chosen:  # seed by seed: an interrupted confirmation leaves whole pairs
        for k in keys:
            runs[k].append(runner.run(arms[k], seed, "confirm"))
    return {"champion": champion, "plain": plain, "attention_unet": gate,
            "seeds": [s + runner.offset for s in chosen], "runs": runs}
