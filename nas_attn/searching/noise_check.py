"""`nas-attn noise` / `na.noise`: the noise floor of a data set, measured before a search.

The plain UNet of a space (its `plain_unet` baseline: the narrowest macro, no attention, the
space's recipe) is trained at the full budget (`finalize.full_budget`) under a few seeds on the
user's data, or its runs are read from a finished `finalize` of a study on that data. Each run's
per-case validation counts go into a `nas_attn.stats.noise.NoiseRecord`, stored per data set
(`runs/noise/<signature>.json`); each finished seed is kept (`runs/noise/<signature>/seedN.json`)
so a killed check resumes from it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_write
from ..errors import StudyError
from ..paths import inside
from ..stats.counts import CaseCounts
from ..stats.noise import NoiseRecord, save_record


@dataclass(frozen=True)
class SeedDone:
    """What `progress` hears after each seed."""

    seed: int
    seeds: int
    dice: float
    cached: bool
    seconds: float


def noise_check(space: str | Path = "default", *, data: str | None = None,
                val_pattern: str | None = None, seeds: int = 3, epochs: int | None = None,
                runs_dir: Path = Path("runs"), device: str | None = None,
                progress: Callable[[SeedDone], None] | None = None,
                on_start: Callable[[dict], None] | None = None,
                on_step: Callable | None = None) -> NoiseRecord:
    """Train the space's plain UNet under `seeds` seeds at the full budget (module
    docstring) and store the record. `on_start` hears the plan (data, architecture, epochs);
    `on_step(what, StepInfo)` the trainings' step progress."""
    from ..data import load_data
    from ..data.identity import data_identity
    from ..training import TrainConfig, train
    from .space import full_budget
    from .opening import data_config
    from .sampling import DataInfo
    from .space_files import load_space

    if seeds < 2:
        raise StudyError(f"a noise check needs at least 2 seeds (two runs of one architecture "
                         f"are the pair with no true difference), got {seeds}")
    sp = load_space(space)
    cfg = data_config(sp, data, val_pattern)
    tr, va = load_data(cfg)
    signature = data_identity(tr, va)["signature"]
    arch, overrides = plain_baseline(sp, DataInfo(tr.spatial_dims, tr.in_channels, tr.classes,
                                                  tr.aux_channels))
    options = {**overrides, **full_budget(sp), "max_time_s": None}
    options.update({k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None})
    folder = inside(runs_dir, "noise", signature[:16])
    if on_start is not None:
        on_start({"data": cfg.source, "train": len(tr), "val": len(va), "arch": arch.summary(),
                  "epochs": options["epochs"], "seeds": seeds, "signature": signature,
                  "folder": str(folder)})
    runs = []
    for seed in range(seeds):
        run_cfg = TrainConfig.make(**{**options, "seed": seed})
        key = hashlib.sha256(json.dumps({"arch": arch.to_dict(), "cfg": run_cfg.model_dump(
            mode="json", exclude={"device"}), "data": cfg.model_dump(mode="json")},
            sort_keys=True, default=str).encode()).hexdigest()[:20]
        kept = folder / f"seed{seed}.json"
        rec = _read(kept, key)
        if rec is None:
            res = train(arch, tr, va, cfg, run_cfg, out_dir=folder / f"seed{seed}",
                        progress=None if on_step is None else
                        (lambda info, s=seed: on_step(f"plain UNet seed {s}", info)))
            rec = {"key": key, "seed": seed, "dice": float(res.best["dice"]),
                   "cases": res.best["cases"], "seconds": round(res.seconds, 1)}
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(kept, json.dumps(rec))
            cached = False
        else:
            cached = True
        runs.append(CaseCounts.from_dict(rec["cases"]))
        if progress is not None:
            progress(SeedDone(seed, seeds, rec["dice"], cached, rec.get("seconds", 0.0)))
    record = NoiseRecord(runs, list(range(seeds)), signature, str(cfg.source), arch.summary(),
                         epochs=options["epochs"])
    save_record(record, runs_dir)
    return record


def _read(path: Path, key: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("key") == key and rec.get("cases") else None


def plain_baseline(space, info):
    """The space's `plain_unet` baseline: its architecture and training overrides."""
    import optuna

    from .sampling import baseline_params, sample_arch, sample_training

    params = dict(baseline_params(space)).get("plain_unet")
    if params is None:
        raise StudyError("the space allows no plain UNet (a site without `none` among its "
                         "choices): a noise check trains the plain UNet")
    trial = optuna.trial.FixedTrial(params)
    return sample_arch(trial, space, info), sample_training(trial, space)


def from_finalize(study, runs_dir: Path) -> NoiseRecord:
    """A noise record from a finished `finalize` of `study`: the runs of its plain entrant
    (no attention) with the most seeds, race and confirmation seeds together (runs of one
    recipe under different seeds are alike)."""
    from ..architecture.description import UNetArch

    path = inside(runs_dir, study.study_name, "final", "finalize.json")
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StudyError(f"study {study.study_name!r} has no finished finalize ({path}); run "
                         f"`nas-attn finalize {study.study_name}` first") from None
    rows: dict[str, list[dict]] = {}
    for r in res.get("candidates", []) + (res.get("confirmation") or {}).get("rows", []):
        if not UNetArch.from_dict(r["arch"]).attention_names():
            rows.setdefault(r["key"], []).append(r)
    best = max(rows.items(), key=lambda kv: sum(len(r["val"]) for r in kv[1]), default=None)
    if best is None or sum(len(r["val"]) for r in best[1]) < 2:
        raise StudyError(f"the finalize of {study.study_name!r} has no plain UNet trained under "
                         "2 seeds or more")
    runs, seeds = [], []
    for r in best[1]:
        runs += [CaseCounts.from_dict(c) for c in r["val_cases"]]
        seeds += r["seeds"]
    signature = (study.user_attrs.get("data_identity") or {}).get("signature")
    if not signature:
        raise StudyError(f"study {study.study_name!r} recorded no data identity")
    record = NoiseRecord(runs, seeds, signature, str(res.get("data")), best[1][0]["summary"],
                         epochs=res.get("epochs"), source=f"finalize {study.study_name}")
    save_record(record, runs_dir)
    return record
