"""`finalize`: the honest final answer of a search.

Short trials (or, in a one-shot study, inherited weights) are a proxy. `finalize(study, top=K,
seeds=S)` retrains the K best distinct trials, the baselines and the plain UNet at each
retrained trial's size (`with_controls`: a gain the plain UNet of the same widths also gets is
width, not attention) with the full budget (`full_budget`: at least twice a trial's epochs at its
samples per epoch and at least 30 epochs, no time limit; or `epochs`) under S training
seeds each, picks the winner by **mean validation Dice** (never by test), scores every
retrained model once on the test split, and measures how far the proxy can be trusted: the
Spearman and Kendall rank correlations between the search's scores and the full-budget
validation means; and decides attention against width (`attention_gain`): the winner is
recommended only when its validation gain over the plain UNet of its size, paired by seed, is
above two standard deviations; else that plain UNet is.

The result is a plain dict (JSON): it is kept as the study's user attribute `finalize`, written
to `runs/<study>/final/finalize.json`, and read by `show`, the dashboard note and `export`.
"""
from __future__ import annotations

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
from .space_files import parse_space
from .verdict import attention_gain, kendall, mean_std, save_dashboard_note, spearman

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
    """The TrainConfig fields of a trial that recorded none (an older study): the sampled
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
    from ..training import TrainConfig

    b = space.budget
    out: dict[str, Any] = {"epochs": max(TrainConfig.model_fields["epochs"].default,
                                         2 * b.epochs)}
    if b.samples_per_epoch:
        out["samples_per_epoch"] = b.samples_per_epoch
    return out


@dataclass(frozen=True)
class Recipe:
    """How to retrain one trial: its architecture, the training and data configuration it ran
    with (as it recorded them), and the full budget instead of its short one."""

    study: str
    trial: int
    arch: UNetArch
    train_options: dict[str, Any]
    data_options: dict[str, Any]
    summary: str


def retrain_recipe(study: optuna.Study, trial: FrozenTrial | int | None = None,
                   space=None) -> Recipe:
    """What `train --from-study` and `finalize` run for a trial (the best when None): the
    trial's recorded `train_config` / `data_config` (every field resolved, one-element lists
    and fixed values included), its device dropped, with `full_budget(space)` on top."""
    from .report import get_trial

    t = trial if isinstance(trial, FrozenTrial) else get_trial(study, trial)
    space = space or study_space(study)
    ua = t.user_attrs
    if ua.get("train_config"):
        ran = {k: v for k, v in ua["train_config"].items() if k != "device"}
        searched = {k: ran[k] for k in space.training if k in ran}
    else:
        ran = searched = retrain_options(t, space)
    # the trial's own settings, no time limit, the full budget; the space's training values
    # win over the budget (as they did over the trial's)
    train_opts = {**ran, "max_time_s": None, **full_budget(space), **searched}
    data_opts = dict(ua["data_config"]) if ua.get("data_config") else \
        study_data_options(study, space)
    return Recipe(study.study_name, t.number, trial_arch(t), train_opts, data_opts,
                  ua.get("arch_summary", ""))


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


@dataclass(frozen=True)
class Progress:
    """What the `progress` callback receives after each retraining."""

    index: int          # 1-based run counter
    runs: int
    trial: int
    seed: int
    val_dice: float
    test_dice: float | None


@dataclass
class _Splits:
    """The study's data, loaded once for every retraining."""

    cfg: Any
    train: Any
    val: Any
    test: Any
    test_loader: Any


def _splits(study: optuna.Study, space, data: str | None, test_source: str | None) -> _Splits:
    from torch.utils.data import DataLoader

    from ..data import DataConfig, load_data, load_test
    from ..data.loaders import WholeImageDataset

    opts = study_data_options(study, space)
    if data:
        opts["source"] = data
    if test_source:
        if opts.get("test_pattern"):
            raise StudyError("the study already holds out a test split by test_pattern "
                             f"{opts['test_pattern']!r}; do not give another test folder")
        opts["test_source"] = test_source
    cfg = DataConfig(**opts)
    train_data, val_data = load_data(cfg)
    test_data = load_test(cfg)
    loader = DataLoader(WholeImageDataset(test_data), batch_size=1) if test_data is not None \
        else None
    return _Splits(cfg, train_data, val_data, test_data, loader)


@dataclass(frozen=True)
class Candidate:
    """One model `finalize` retrains: a trial of the study, or the plain UNet at a trial's
    macro (`trial` None, `control_of` that trial) that tells attention from width."""

    trial: int | None
    label: str
    arch: UNetArch
    short_dice: float | None
    source: FrozenTrial
    """The trial whose recorded recipe the retraining replays."""
    control_of: int | None = None

    @property
    def folder(self) -> str:
        if self.trial is None:
            return f"plain_at_trial_{self.control_of:04d}"
        return f"trial_{self.trial:04d}"


SAME_SIZE_PLAIN = "same-size plain"


def with_controls(chosen: list[FrozenTrial]) -> list[Candidate]:
    """The chosen trials, then the plain UNet at the macro of each chosen non-baseline trial
    with attention, unless a chosen trial already is that plain UNet."""
    out = [Candidate(t.number, t.user_attrs.get("baseline", ""), trial_arch(t),
                     float(t.values[0]), t) for t in chosen]
    have = {c.arch.to_json() for c in out}
    for c in list(out):
        plain = c.arch.without_attention()
        if c.label or plain.to_json() in have:
            continue
        have.add(plain.to_json())
        out.append(Candidate(None, SAME_SIZE_PLAIN, plain, None, c.source, c.trial))
    return out


def _retrain(c: Candidate, base: dict[str, Any], seeds: int, d: _Splits, out_root: Path,
             on_run: Callable[[int, float, float | None], None],
             on_epoch: Callable[[int, int, int, dict], None] | None) -> dict[str, Any]:
    """One candidate under every seed: its row of the result."""
    from ..training import TrainConfig, evaluate, train
    from ..training.validation import eval_patch

    arch = c.arch
    row: dict[str, Any] = {
        "trial": c.trial, "label": c.label, "control_of": c.control_of,
        "summary": arch.summary(), "arch": arch.to_dict(), "short_dice": c.short_dice,
        "val": [], "test": [], "best_epoch": [], "checkpoints": [], "seconds": [],
        "train_config": None}
    for s in range(seeds):
        cfg = TrainConfig.make(**{**base, "seed": s})
        row["train_config"] = cfg.model_dump(mode="json", exclude={"seed"})

        def _epoch(epoch, metrics, _t=c.trial, _s=s):
            if on_epoch is not None:
                on_epoch(_t, _s, epoch, metrics)

        res = train(arch, d.train, d.val, d.cfg, cfg, out_dir=out_root / f"{c.folder}_seed{s}",
                    on_epoch=_epoch)
        val = float(res.best["dice"])
        tst = None
        if d.test_loader is not None:
            tst = float(evaluate(res.model, d.test_loader, res.runtime, classes=arch.classes,
                                 patch_size=eval_patch(d.cfg, d.train),
                                 overlap=cfg.val_overlap)["dice"])
        row["val"].append(val)
        row["test"].append(tst)
        row["best_epoch"].append(int(res.best.get("epoch", -1)))
        row["checkpoints"].append(str(res.checkpoint) if res.checkpoint else None)
        row["seconds"].append(round(res.seconds, 1))
        on_run(s, val, tst)
    row["val_mean"], row["val_std"] = mean_std(row["val"])
    if d.test_loader is not None:
        row["test_mean"], row["test_std"] = mean_std(row["test"])
    return row


def _result(study: optuna.Study, rows: list[dict[str, Any]], top: int, seeds: int,
            d: _Splits) -> dict[str, Any]:
    """The finalize result (stored as the study's `finalize` attribute): the winner on
    validation, its gain over the same-size plain UNet, the recommended model and its best
    seed's checkpoint, and how the search's scores ranked the candidates."""
    winner = max(rows, key=lambda r: r["val_mean"])
    gain = attention_gain(rows, winner)
    rec = winner if gain["recommend"] == "winner" else gain["plain_row"]
    best_seed = max(range(seeds), key=lambda i: winner["val"][i])
    rec_seed = max(range(seeds), key=lambda i: rec["val"][i])
    searched = [r for r in rows if r["short_dice"] is not None]
    short, full = [r["short_dice"] for r in searched], [r["val_mean"] for r in searched]
    return {
        "metric": METRIC,
        "strategy": study.user_attrs.get("strategy", "trials"),
        "top": top, "seeds": seeds,
        "epochs": rows[0]["train_config"]["epochs"],
        "data": d.cfg.source,
        "splits": {"train": len(d.train), "val": len(d.val),
                   "test": len(d.test) if d.test is not None else 0},
        "test_source": ("separate folder " + str(d.cfg.test_source) if d.cfg.test_source
                        else "test_pattern " + str(d.cfg.test_pattern) if d.cfg.test_pattern
                        else "built-in held-out set" if d.cfg.is_builtin
                        else "the folder's test list" if d.test is not None else None),
        "candidates": rows,
        "winner": winner["trial"],
        "winner_summary": winner["summary"],
        "winner_checkpoint": winner["checkpoints"][best_seed],
        "attention_gain": {k: v for k, v in gain.items() if k != "plain_row"},
        "recommended": {"trial": rec["trial"], "label": rec["label"], "summary": rec["summary"],
                        "arch": rec["arch"], "checkpoint": rec["checkpoints"][rec_seed]},
        "spearman_short_vs_full": spearman(short, full),
        "kendall_short_vs_full": kendall(short, full),
    }


def finalize(study: optuna.Study, *, top: int = 3, seeds: int = 3, epochs: int | None = None,
             runs_dir: Path = Path("runs"), device: str | None = None,
             test_source: str | None = None, data: str | None = None, baselines: bool = True,
             progress: Callable[[Progress], None] | None = None,
             on_epoch: Callable[[int, int, int, dict], None] | None = None) -> dict[str, Any]:
    """Retrain, choose on validation, report on test (module docstring). `test_source` adds a
    separate test folder (never seen by the search); `data` overrides the data folder path (the
    same data on another machine)."""
    from ..training.checkpoint import write_json

    if top < 1 or seeds < 1:
        raise StudyError(f"top and seeds must be >= 1, got top={top}, seeds={seeds}")
    space = study_space(study)
    d = _splits(study, space, data, test_source)
    chosen = with_controls(candidates(study, top, baselines))
    out_root = inside(runs_dir, study.study_name, "final")
    runs = len(chosen) * seeds
    rows: list[dict[str, Any]] = []
    done = [0]
    for c in chosen:
        base = retrain_recipe(study, c.source, space).train_options
        if epochs is not None:
            base["epochs"] = epochs
        if device is not None:
            base["device"] = device

        def on_run(seed, val, tst, _t=c.trial):
            done[0] += 1
            if progress is not None:
                progress(Progress(done[0], runs, _t, seed, val, tst))

        rows.append(_retrain(c, base, seeds, d, out_root, on_run, on_epoch))
    result = _result(study, rows, top, seeds, d)
    write_json(out_root / "finalize.json", result)
    study.set_user_attr("finalize", result)
    save_dashboard_note(study, result)
    return result
