"""The trainings of `finalize`'s race (`nas_attn.stats.race` decides, this module trains) and its
confirmation on fresh seeds.

Every finished training is a file `runs/<study>/final/runs/<hash>.json` (written atomically),
named by a hash of what it ran (architecture, training and data configuration, seed), so a
killed finalize resumes from its last finished training, and a finalize run again with other
options (another `--top`) reuses every training whose recipe is unchanged. Each run records
its per-case counts on validation and, when there is a test split, on test (reported, never
used to choose). Trainings are claimed before they start (`claims`), so several processes that
share the runs folder split each round's trainings: `finalize --workers N / --gpus`, or
`finalize --join` on other machines.
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
POLL_S = 5.0
"""How often a process whose remaining trainings are all claimed by others looks again."""


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
    control_of: int | None = None  # a same-size plain UNet: the trial whose size it has

    @property
    def name(self) -> str:
        return entrant_name({"trial": self.trial, "control_of": self.control_of,
                             "label": self.label})


@dataclass(frozen=True)
class Arm:
    """One entrant as the runner trains it."""

    key: str
    trial: int | None
    label: str
    arch: Any
    train_options: dict[str, Any]
    control_of: int | None = None  # a same-size plain UNet: the trial whose size it has

    @property
    def name(self) -> str:
        return entrant_name({"trial": self.trial, "control_of": self.control_of,
                             "label": self.label, "key": self.key})


def entrant_name(row: dict[str, Any]) -> str:
    """How the reports name an entrant: its trial, the plain UNet at a trial's size (there
    is one per raced candidate), or its label."""
    if row.get("trial") is not None:
        return f"trial {row['trial']}"
    if row.get("control_of") is not None:
        return f"the plain UNet at trial {row['control_of']}'s size"
    return row.get("label") or row.get("key", "")


def recipe_hash(arm: Arm, data_options: dict[str, Any], seed: int) -> str:
    """What a training's result depends on (not the device it ran on, nor loader workers): a
    worker pinned to a GPU finds the runs of the CPU parent, and the other way round."""
    train = {k: v for k, v in arm.train_options.items() if k != "device"}
    data = {k: v for k, v in data_options.items() if k != "num_workers"}
    blob = json.dumps({"arch": arm.arch.to_dict(), "train": train, "data": data, "seed": seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Runner:
    """Trains an arm under a seed once. Every finished run is a file of its own
    (`final/runs/<recipe hash>.json`, written atomically); a training is claimed before it
    starts (`claims.Claims`, `final/claims/`), so several processes sharing the runs folder (a
    finalize's `--workers`, or `--join` from other machines) split a round's trainings."""

    def __init__(self, splits, out_root: Path, *, progress: Callable[[Progress], None] | None,
                 on_epoch: Callable | None, planned: int, seed_offset: int = 0,
                 on_step: Callable | None = None):
        from .claims import Claims

        self.d = splits
        self.on_step = on_step
        """`on_step(what, StepInfo)`: the training's step progress (`nas_attn.training`)."""
        self.offset = seed_offset
        """Added to every seed: a finalize repeated with another offset trains other seeds."""
        self.out_root = Path(out_root)
        self.runs_dir = self.out_root / "runs"
        self.claims = Claims(self.out_root / "claims")
        self.progress, self.on_epoch, self.planned = progress, on_epoch, planned
        self.done = 0
        self.records: dict[str, dict[str, Any]] = {}
        self.used: dict[tuple[str, int], dict[str, Any]] = {}
        self._data = self.d.cfg.model_dump(mode="json")

    def _hash(self, arm: Arm, seed: int) -> str:
        return recipe_hash(arm, self._data, seed + self.offset)

    def cached(self, arm: Arm, seed: int) -> dict[str, Any] | None:
        """The finished run of `arm` under `seed`, by this process or another, if any."""
        h = self._hash(arm, seed)
        rec = self.records.get(h)
        if rec is None:
            try:
                rec = json.loads((self.runs_dir / f"{h}.json").read_text())
            except (OSError, ValueError):
                return None
            self.records[h] = rec
        if rec.get("key") != arm.key:
            return None
        self.used[(arm.key, seed)] = rec
        return rec

    def records_for(self, key: str, seed: int) -> dict[str, Any]:
        """The run of entrant `key` under `seed` this finalize used (trained or read back)."""
        return self.used[(key, seed)]

    def run(self, arm: Arm, seed: int, phase: str = "race") -> dict[str, Any] | None:
        """The record of `arm` trained under `seed`: kept, or trained now; None while another
        process holds its claim (it is training it)."""
        rec = self.cached(arm, seed)
        if rec is not None:
            return rec
        h = self._hash(arm, seed)
        if not self.claims.take(h):
            return None
        try:
            rec = self.cached(arm, seed)  # finished by another between our look and the claim
            if rec is not None:
                return rec
            rec = self._train(arm, seed)
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.runs_dir / f"{h}.json", json.dumps(rec))
            self.records[h] = rec
            self.used[(arm.key, seed)] = rec
        finally:
            self.claims.release(h)
        self.done += 1
        if self.progress is not None:
            from ..stats.compare import estimate

            ci = estimate([CaseCounts.from_dict(rec["val_cases"])])
            self.progress(Progress(self.done, self.planned, arm.trial, rec["seed"], rec["val"],
                                   rec["test"], arm.label, phase, (ci.low, ci.high),
                                   arm.control_of))
        return rec

    def wait(self) -> None:
        """Another process trains what is left: look again in a moment."""
        import time

        time.sleep(POLL_S)

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
                self.on_step(f"{arm.name} seed {cfg.seed}", info)

        res = train(arm.arch, d.train, d.val, d.cfg, cfg, progress=_step,
                    out_dir=self.out_root / f"{arm.key}_seed{cfg.seed}", on_epoch=_epoch)
        test = None
        if d.test_loader is not None:
            test = evaluate(res.model, d.test_loader, res.runtime, classes=arm.arch.classes,
                            patch_size=eval_patch(d.cfg, d.train), overlap=cfg.val_overlap)
        return {"key": arm.key, "trial": arm.trial, "label": arm.label,
                "control_of": arm.control_of, "seed": cfg.seed,
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
    """Run the race to its end: what `race.replay()` asks for is trained (or read back: an
    earlier killed or shorter finalize, another process of this one), round after round.
    Returns the final `Plan`."""
    told = 0
    while True:
        for key, arm in arms.items():  # what is finished, here or elsewhere
            for seed in range(race.max_seeds):
                if seed not in race.runs[key] and (rec := runner.cached(arm, seed)):
                    race.add(key, seed, CaseCounts.from_dict(rec["val_cases"]))
        plan = race.replay()
        for rnd in plan.rounds[told:]:
            if on_round is not None:
                on_round(rnd)
        told = len(plan.rounds)
        if not plan.pending:
            return plan
        trained = False
        for key, seed in plan.pending:
            rec = runner.run(arms[key], seed)
            if rec is not None:
                race.add(key, seed, CaseCounts.from_dict(rec["val_cases"]))
                trained = True
        if not trained:
            runner.wait()


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
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    while len(runs) < len(keys) * len(chosen):
        trained = False
        for seed in chosen:  # seed by seed: an interrupted confirmation leaves whole pairs
            for k in keys:
                if (k, seed) not in runs and (rec := runner.run(arms[k], seed, "confirm")):
                    runs[(k, seed)] = rec
                    trained = True
        if not trained:
            runner.wait()
    return {"champion": champion, "plain": plain, "attention_unet": gate,
            "seeds": [s + runner.offset for s in chosen],
            "runs": {k: [runs[(k, s)] for s in chosen] for k in keys}}
