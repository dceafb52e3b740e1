"""`finalize`: the honest final answer of a search, decided at the noise floor.

Short trials (or, in a one-shot study, inherited weights) are a proxy. `finalize(study, top=K)`
enters the K best distinct trials, the baselines and the plain UNet at each entered trial's size
(`with_controls`: a gain the plain UNet of the same widths also gets is width, not attention)
in a race of full-budget retrainings (`full_budget`: at least twice a trial's epochs at its
samples per epoch and at least 30 epochs, no time limit; or `epochs`):
`nas_attn.stats.race` decides after each round which entrants are significantly worse than the
current best (paired by seed on the same validation cases, Holm-corrected) and drops them;
every survivor gets one more seed per round (`nas_attn.searching.racing` trains them and keeps
every finished training, so a killed finalize resumes).

Then the winner's curse is kept out of the verdict: the champion (the race's best attention
entrant), the plain UNet of its size and the Attention U-Net are trained under fresh
confirmation seeds, and `nas_attn.stats.compare` decides on those runs alone whether attention
helps, hurts, or makes no detectable difference (with the smallest effect it could detect).
Fresh seeds rather than held-back validation cases: on real data the seed-to-seed spread is the
larger noise (docs/benchmarks/noise.md), and halving a validation split of 26 slices would widen every interval
by about 40 %; the cases are the same, so a champion that fits these validation cases by chance
is not fully protected against (the benchmark measures the rest). The test split is scored for
every training and reported, never used to choose. Unless attention helps, the race's best
survivor without attention (by its validation mean on the race's seeds) is recommended: the
champion's same-size plain UNet answers whether attention helps, a plain UNet of another size
may be the better model. The Spearman and Kendall rank correlations between the search's
scores and the full-budget validation means say how far the proxy can be trusted.

The result is a plain dict (JSON): written to `runs/<study>/final/finalize.json` (with the
per-case counts of every run), kept without them as the study's user attribute `finalize`, and
read by `show`, the dashboard note and `export`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..architecture.description import UNetArch
from ..errors import StudyError
from ..paths import inside
from .report import trial_arch
from .space import full_budget
from .space_files import parse_space

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


def entrants_of(chosen: list[Candidate]):
    """The race's entrants: each candidate, with the entrant that is the plain UNet of its size
    (same widths, depth, upsampling; no attention) when one was entered."""
    from ..stats.race import Entrant

    by_arch = {c.arch.to_json(): c.folder for c in chosen}
    out = []
    for c in chosen:
        attention = bool(c.arch.attention_names())
        plain = by_arch.get(c.arch.without_attention().to_json()) if attention else None
        out.append(Entrant(c.folder, c.label, attention, plain))
    return out


def finalize(study: optuna.Study, *, top: int = 3, seeds: int = 5, min_seeds: int = 2,
             budget: int | None = None, confirm_seeds: int = 3, epochs: int | None = None,
             runs_dir: Path = Path("runs"), device: str | None = None,
             test_source: str | None = None, data: str | None = None, baselines: bool = True,
             progress: Callable | None = None, on_epoch: Callable | None = None,
             on_round: Callable | None = None, seed_offset: int = 0,
             on_step: Callable | None = None, workers: int | None = None,
             gpus: str | None = None, per_gpu: int = 1, storage: str | None = None,
             join: bool = False) -> dict[str, Any]:
    """The race, its confirmation on fresh seeds, the test report (module docstring).
    `seeds`: the most seeds an entrant gets in the race; `min_seeds`: the first round's;
    `budget`: full trainings for the race (default 3 per entrant); `confirm_seeds`: fresh seeds
    of the champion, its plain UNet and the Attention U-Net that decide the verdict (0: none,
    the verdict then comes from the seeds that chose the champion, and says so). `test_source`
    adds a separate test folder (never seen by the search); `data` overrides the data folder
    path (the same data on another machine). `on_round(Round)` hears each decided round;
    `seed_offset` is added to every training seed (a repeated finalize on other seeds);
    `on_step(what, StepInfo)` hears the trainings' step progress.

    `workers` / `gpus` (+ `per_gpu`): the trainings run in that many worker processes (GPU
    workers pinned as a search's are), which split each round between them; `storage` is
    what they open the study from. `join=True`: only train (this process joins a finalize
    started elsewhere with the same options and runs folder); returns how many it trained."""
    from ..training.checkpoint import write_json
    from .racing import Runner, confirm, drive
    from .verdict import assemble, attach_picture, save_dashboard_note, slim

    if top < 1 or seeds < 2 or min_seeds < 2 or min_seeds > seeds or confirm_seeds == 1 \
            or confirm_seeds < 0:
        raise StudyError(f"finalize needs top >= 1, 2 <= min_seeds <= seeds and confirm_seeds 0 "
                         f"or >= 2 (a comparison needs two seeds), got top={top}, seeds={seeds}, "
                         f"min_seeds={min_seeds}, confirm_seeds={confirm_seeds}")
    d, chosen, arms, race = _prepare(study, top, baselines, epochs, device, data, test_source,
                                     min_seeds, seeds, budget)
    out_root = inside(runs_dir, study.study_name, "final")
    runner = Runner(d, out_root, progress=progress, on_epoch=on_epoch,
                    planned=race.budget + 3 * confirm_seeds, seed_offset=seed_offset,
                    on_step=on_step)
    if workers is not None or gpus is not None:
        from .race_workers import run_workers

        run_workers(study.study_name, runner, arms, storage, runs_dir, workers, gpus, per_gpu,
                    device, join_args(top=top, seeds=seeds, min_seeds=min_seeds, budget=budget,
                                      confirm_seeds=confirm_seeds, epochs=epochs,
                                      test_source=test_source, data=data,
                                      seed_offset=seed_offset, baselines=baselines))
    plan = drive(race, arms, runner, on_round)
    conf = confirm(race, plan, arms, runner, confirm_seeds)
    if join:
        return {"joined": study.study_name, "trained": runner.done}
    result = assemble(study, race, plan, conf, chosen, runner, d, top)
    attach_picture(study, result, conf, out_root)
    write_json(out_root / "finalize.json", result)
    study.set_user_attr("finalize", slim(result))
    save_dashboard_note(study, result)
    return result


def _prepare(study, top, baselines, epochs, device, data, test_source, min_seeds, seeds,
             budget):
    """The data, the entrants, how each is trained, and the race."""
    from ..stats.race import Race
    from .racing import Arm

    space = study_space(study)
    d = _splits(study, space, data, test_source)
    chosen = with_controls(candidates(study, top, baselines))
    arms = {}
    for c in chosen:
        opts = retrain_recipe(study, c.source, space).train_options
        opts.update({k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None})
        arms[c.folder] = Arm(c.folder, c.trial, c.label, c.arch, opts, c.control_of)
    try:
        race = Race(entrants_of(chosen), min_seeds=min_seeds, max_seeds=seeds, budget=budget)
    except ValueError as e:
        raise StudyError(f"finalize: {e}") from None
    return d, chosen, arms, race


def join_args(**options) -> list[str]:
    """The `nas-attn finalize STUDY --join` options that make a worker race exactly this."""
    out = []
    for key, value in options.items():
        flag = "--" + {"test_source": "test-data"}.get(key, key).replace("_", "-")
        if key == "baselines":
            out += [] if value else ["--no-baselines"]
        elif value is not None:
            out += [flag, str(value)]
    return out


finalize_study = finalize
"""`finalize` by the name the package's public surface gives it (`nas_attn.searching`), where
the plain name would be this module's."""
