"""`finalize`: the honest final answer of a search.

Short trials are a proxy. `finalize(study, top=K, seeds=S)` retrains the K best distinct trials
and the baselines with the full budget (`full_budget`: at least twice a trial's epochs at its
samples per epoch and at least 30 epochs, no time limit; or `epochs`) under S training
seeds each, picks the winner by **mean validation Dice** (never by test), scores every
retrained model once on the test split, and measures how far the proxy can be trusted: the
Spearman rank correlation between the short-trial scores and the full-budget validation means.

The result is a plain dict (JSON): it is kept as the study's user attribute `finalize`, written
to `runs/<study>/final/finalize.json`, and read by `show`, the dashboard note and `export`.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..arch import UNetArch
from ..errors import StudyError
from ..paths import inside
from .report import trial_arch
from .space import parse_space

METRIC = "Dice per class, pooled over the split (mean over foreground classes present)"


def study_space(study: optuna.Study):
    """The search space stored with the study."""
    text = study.user_attrs.get("space_yaml")
    if not text:
        raise StudyError(f"study {study.study_name!r} has no stored search space")
    return parse_space(yaml.safe_load(text), study.study_name)


def study_data_options(study: optuna.Study, space=None) -> dict[str, Any]:
    """DataConfig fields the search used (space data, then the study's --data / patterns)."""
    space = space or study_space(study)
    opts = dict(space.data)
    for attr, key in (("data_override", "source"), ("val_pattern", "val_pattern"),
                      ("test_pattern", "test_pattern"), ("test_data", "test_source")):
        if study.user_attrs.get(attr):
            opts[key] = study.user_attrs[attr]
    return opts


def _fixed(v: Any) -> tuple[bool, Any]:
    """A space value that is one fixed choice (a scalar or a one-element list)."""
    if isinstance(v, list):
        return (len(v) == 1, v[0] if len(v) == 1 else None)
    if isinstance(v, dict) or hasattr(v, "low"):
        return False, None
    return True, v


def retrain_options(trial: FrozenTrial, space) -> dict[str, Any]:
    """The TrainConfig fields a trial trained with, minus its short budget: the sampled
    `train.*` parameters and the space's fixed training values."""
    opts = {}
    for k, v in space.training.items():
        ok, value = _fixed(v)
        if ok:
            opts[k] = value
    opts.update({k[len("train."):]: v for k, v in trial.params.items() if k.startswith("train.")})
    return opts


def full_budget(space) -> dict[str, Any]:
    """Never less than a trial saw: the trial's samples per epoch (when the space sets them)
    for at least twice its epochs and at least the TrainConfig default of 30, with no time
    limit."""
    from ..train import TrainConfig

    b = space.budget
    out: dict[str, Any] = {"epochs": max(TrainConfig.model_fields["epochs"].default,
                                         2 * b.epochs)}
    if b.samples_per_epoch:
        out["samples_per_epoch"] = b.samples_per_epoch
    return out


def candidates(study: optuna.Study, top: int, baselines: bool = True) -> list[FrozenTrial]:
    """The `top` best completed trials with distinct configurations, and (`baselines`) every
    completed baseline not among them (Pareto studies too are ranked by Dice)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
            and "duplicate_of" not in t.user_attrs]
    if not done:
        raise StudyError(f"study {study.study_name!r} has no completed trial to finalize")
    done.sort(key=lambda t: -t.values[0])
    best, base, keys = [], [], set()
    for t in done:
        key = t.user_attrs.get("config_key", t.number)
        if key in keys:
            continue
        if baselines and t.user_attrs.get("baseline"):
            base.append(t)
        elif len(best) < top:
            best.append(t)
        else:
            continue
        keys.add(key)
    return best + base


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (scipy), None with fewer than 3 points or no spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def _mean_std(v: list[float]) -> tuple[float, float]:
    return (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)


@dataclass(frozen=True)
class Progress:
    """What the `progress` callback receives after each retraining."""

    index: int          # 1-based run counter
    runs: int
    trial: int
    seed: int
    val_dice: float
    test_dice: float | None


def finalize(study: optuna.Study, *, top: int = 3, seeds: int = 3, epochs: int | None = None,
             runs_dir: Path = Path("runs"), device: str | None = None,
             test_source: str | None = None, data: str | None = None, baselines: bool = True,
             progress: Callable[[Progress], None] | None = None,
             on_epoch: Callable[[int, int, int, dict], None] | None = None) -> dict[str, Any]:
    """Retrain, choose on validation, report on test (module docstring). `test_source` adds a
    separate test folder (never seen by the search); `data` overrides the data folder path (the
    same data on another machine)."""
    from torch.utils.data import DataLoader

    from ..data import DataConfig, load_data, load_test
    from ..data.loaders import WholeImageDataset
    from ..train import TrainConfig, evaluate, train
    from ..train.checkpoint import write_json
    from ..train.loop import _eval_patch

    if top < 1 or seeds < 1:
        raise StudyError(f"top and seeds must be >= 1, got top={top}, seeds={seeds}")
    space = study_space(study)
    opts = study_data_options(study, space)
    if data:
        opts["source"] = data
    if test_source:
        if opts.get("test_pattern"):
            raise StudyError("the study already holds out a test split by test_pattern "
                             f"{opts['test_pattern']!r}; do not give another test folder")
        opts["test_source"] = test_source
    data_cfg = DataConfig(**opts)
    train_data, val_data = load_data(data_cfg)
    test_data = load_test(data_cfg)
    test_loader = (DataLoader(WholeImageDataset(test_data), batch_size=1)
                   if test_data is not None else None)
    chosen = candidates(study, top, baselines)
    out_root = inside(runs_dir, study.study_name, "final")
    runs = len(chosen) * seeds
    rows: list[dict[str, Any]] = []
    k = 0
    for t in chosen:
        arch: UNetArch = trial_arch(t)
        base = {**full_budget(space), **retrain_options(t, space)}
        if epochs is not None:
            base["epochs"] = epochs
        if device is not None:
            base["device"] = device
        row: dict[str, Any] = {
            "trial": t.number, "label": t.user_attrs.get("baseline", ""),
            "summary": arch.summary(), "short_dice": float(t.values[0]),
            "val": [], "test": [], "best_epoch": [], "checkpoints": [], "seconds": [],
            "train_config": None}
        for s in range(seeds):
            cfg = TrainConfig.make(**{**base, "seed": s})
            row["train_config"] = cfg.model_dump(mode="json", exclude={"seed"})
            k += 1
            out_dir = out_root / f"trial_{t.number:04d}_seed{s}"

            def _epoch(epoch, metrics, _t=t.number, _s=s):
                if on_epoch is not None:
                    on_epoch(_t, _s, epoch, metrics)

            res = train(arch, train_data, val_data, data_cfg, cfg, out_dir=out_dir,
                        on_epoch=_epoch)
            val = float(res.best["dice"])
            tst = None
            if test_loader is not None:
                tst = float(evaluate(res.model, test_loader, res.runtime, classes=arch.classes,
                                     patch_size=_eval_patch(data_cfg, train_data),
                                     overlap=cfg.val_overlap)["dice"])
            row["val"].append(val)
            row["test"].append(tst)
            row["best_epoch"].append(int(res.best.get("epoch", -1)))
            row["checkpoints"].append(str(res.checkpoint) if res.checkpoint else None)
            row["seconds"].append(round(res.seconds, 1))
            if progress is not None:
                progress(Progress(k, runs, t.number, s, val, tst))
        row["val_mean"], row["val_std"] = _mean_std(row["val"])
        if test_loader is not None:
            row["test_mean"], row["test_std"] = _mean_std(row["test"])
        rows.append(row)
    winner = max(rows, key=lambda r: r["val_mean"])
    best_seed = max(range(seeds), key=lambda i: winner["val"][i])
    result = {
        "metric": METRIC,
        "top": top, "seeds": seeds,
        "epochs": rows[0]["train_config"]["epochs"],
        "data": data_cfg.source,
        "splits": {"train": len(train_data), "val": len(val_data),
                   "test": len(test_data) if test_data is not None else 0},
        "test_source": ("separate folder " + str(data_cfg.test_source) if data_cfg.test_source
                        else "test_pattern " + str(data_cfg.test_pattern) if data_cfg.test_pattern
                        else "built-in held-out set" if data_cfg.is_builtin
                        else "the folder's test list" if test_data is not None else None),
        "candidates": rows,
        "winner": winner["trial"],
        "winner_checkpoint": winner["checkpoints"][best_seed],
        "spearman_short_vs_full": spearman([r["short_dice"] for r in rows],
                                           [r["val_mean"] for r in rows]),
    }
    write_json(out_root / "finalize.json", result)
    study.set_user_attr("finalize", result)
    _note(study, result)
    return result


def finalize_markdown(res: dict[str, Any]) -> str:
    """The result as a markdown table (the study's note in optuna-dashboard)."""
    has_test = res["splits"]["test"] > 0
    lines = [f"## Final answer: trial {res['winner']}",
             f"Full-budget retraining ({res['epochs']} epochs, {res['seeds']} seeds) of the "
             f"{res['top']} best trials and the baselines; winner chosen by mean validation "
             f"Dice. Metric: {res['metric']}. Test: {res['test_source'] or 'none'} "
             f"({res['splits']['test']} samples), scored once, never used to choose.", "",
             "| trial | baseline | short-trial Dice | val Dice (mean ± sd) | test Dice (mean ± sd) "
             "| architecture |", "|---|---|---|---|---|---|"]
    for r in sorted(res["candidates"], key=lambda r: -r["val_mean"]):
        test = f"{r['test_mean']:.4f} ± {r['test_std']:.4f}" if has_test else "—"
        lines.append(f"| {r['trial']} | {r['label'] or ''} | {r['short_dice']:.4f} | "
                     f"{r['val_mean']:.4f} ± {r['val_std']:.4f} | {test} | `{r['summary']}` |")
    rho = res.get("spearman_short_vs_full")
    lines += ["", "Spearman rank correlation, short-trial score vs full-budget validation mean: "
              + ("n/a (fewer than 3 distinct candidates)" if rho is None else f"{rho:+.2f}")]
    return "\n".join(lines)


def _note(study: optuna.Study, res: dict[str, Any]) -> None:
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(study, finalize_markdown(res))
