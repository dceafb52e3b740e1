"""Opening a search: the request, the study (storage, sampler, pruner, strategy, the space and
data it was made with), its baselines, and the checks that run before any trial (a bad data
folder, another space or other data under the same study name). `run.py` runs the loop,
`faults.py` words what stops it, `objective.py` is the per-trial objective.

Library code: it prints nothing.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import yaml

from ..inference.compat import pin_old_normalisation
from ..errors import (
    StudyError,
)
from ..paths import check_name
from .artifacts import artifact_dir_for, artifact_store
from .objective import Listener, Objective
from .request import SearchRequest
from .sampling import baseline_params
from .space import Space
from .strategy import get_strategy
from .space_files import load_space, read_space_text, resolve_space_path
from .study import (
    DEFAULT_RUNS,
    make_pruner,
    make_sampler,
    open_storage,
    storage_errors,
    study_names,
)

if TYPE_CHECKING:
    from .oneshot.budget import PlacementBudget

DIRECTIONS = {"dice": "maximize", "params": "minimize", "flops": "minimize",
              "latency_ms": "minimize"}


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
    from pydantic import ValidationError

    try:
        return DataConfig(**cfg)
    except ValidationError as e:  # the space's data settings with --data, --val-pattern, ...
        from ..errors import DataError
        from ..training.config import format_errors

        given = f" with --data {source}" if source else ""
        why = "; ".join(line.strip().replace("config: Value error, ", "")
                        for line in format_errors(e).splitlines())
        raise DataError(f"the space's data settings{given} do not fit: {why}") from None


def _check_test_folder(source: str | None) -> None:
    """A --test-data folder is checked when the search starts, not first at `finalize`."""
    if not source or source in ("builtin", "builtin3d"):
        return
    from ..data import check_folder
    from ..errors import DataError

    rep = check_folder(source)
    if not rep.ok:
        more = f" (and {len(rep.problems) - 1} more: nas-attn data check {source})" \
            if len(rep.problems) > 1 else ""
        raise DataError(f"--test-data {source}: {rep.problems[0]}{more}")


def _data_identity(objective, study0, req: SearchRequest, notes: list[str]) -> dict | None:
    """The data's identity to record with the study (None: the recorded one stands). A resume
    on other data than the study was created with is refused unless `req.force_data`."""
    from ..data.identity import data_identity, describe, differences

    ident = data_identity(objective.train_data, objective.val_data)
    old = None if study0 is None else study0.user_attrs.get("data_identity")
    if old is None:
        return ident
    diff = differences(old, ident)
    if not diff:
        return None
    if not req.force_data:
        raise StudyError(
            f"study {study0.study_name!r} was run on {describe(old)}; this data is "
            f"{describe(ident)} ({'; '.join(diff)}): their scores cannot be ranked together; "
            "resume with the same data and --val-pattern, choose a new --study name, or pass "
            "--force-data")
    notes.append(f"--force-data: study {study0.study_name!r} now continues on "
                 f"{describe(ident)} ({'; '.join(diff)}); its earlier trials were scored on "
                 "other data")
    return ident


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
    strategy: str = "trials"
    prepared: bool = False
    """What the strategy runs before its trials is done (`prepare`)."""
    placements: PlacementBudget | None = None
    """A one-shot session's `PlacementBudget` of its last `run_search` (new placements scored,
    repeats, why it stopped short)."""

    def trials(self, asked: int | None = None) -> int:
        """Trials to run now: `asked`, else the space's `search.trials` (one-shot: new
        placements to score, `search.oneshot.trials` by default; see `oneshot.budget`)."""
        return asked if asked is not None else self.plan.trials(self.space)

    @property
    def plan(self):
        """The session's strategy (`nas_attn.searching.strategy`)."""
        from .strategy import get_strategy

        return get_strategy(self.strategy)

    def prepare(self) -> None:
        """What the strategy runs before its trials (one-shot: phase 1), once per session;
        the one place it is started from."""
        if not self.prepared:
            self.plan.prepare(self)
            self.prepared = True


def open_search(req: SearchRequest, listener: Listener | None = None) -> SearchSession:
    storage = open_storage(req.storage, Path(req.runs_dir))
    with storage_errors(storage):  # e.g. a full disk under the SQLite file: one clear line
        return _open_search(req, storage, listener)


def _check_same_space(study0: optuna.Study, space_path: Path) -> None:
    """A study resumes with the space it was created with (its stored copy)."""
    name = study0.study_name
    stored = study0.user_attrs.get("space_yaml")
    if stored is None or yaml.safe_load(stored) == yaml.safe_load(read_space_text(space_path)):
        return
    was = study0.user_attrs.get("space_path")
    if was and Path(was).resolve() == space_path.resolve():
        raise StudyError(
            f"{space_path}: the file changed since study {name!r} was created with it; "
            "restore its content (the study keeps a copy in its user attribute space_yaml) or "
            "choose a new --study name")
    raise StudyError(f"study {name!r} was created with a different search space ({was}); "
                     "resume it with that space or choose a new --study name")


def _record_request(study: optuna.Study, req: SearchRequest, space: Space, space_path: Path,
                    strategy: str) -> None:
    """What a new study keeps of its request: the space (path and text), objectives, strategy
    and the data settings a resume reuses."""
    study.set_user_attr("space_path", str(space_path))
    study.set_user_attr("space_yaml", read_space_text(space_path))
    study.set_user_attr("objectives", list(space.objectives))
    study.set_user_attr("strategy", strategy)
    if req.data:
        study.set_user_attr("data_override", req.data)
    for attr in ("val_pattern", "test_pattern", "test_data"):
        if getattr(req, attr):
            study.set_user_attr(attr, getattr(req, attr))


def _fail_dead_trials(study: optuna.Study) -> None:
    """A dead run's RUNNING trials (killed, a full disk): failed now and retried, this
    machine's dead workers at once, others' after the heartbeat's grace period."""
    from .heartbeat import fail_orphaned_trials

    fail_orphaned_trials(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _open_search(req: SearchRequest, storage, listener: Listener | None) -> SearchSession:
    """`open_search` on an opened storage (the request's data checked before a study is made)."""
    runs_dir = Path(req.runs_dir)
    existing = study_names(storage)
    notes = list(req.notes)
    space_path = resolve_space_path(req.space)
    space = load_space(space_path)
    name = req.study or f"{space_path.stem}"
    created = name not in existing
    if created:
        check_name(name)
    else:
        study0 = optuna.load_study(study_name=name, storage=storage)
        _check_same_space(study0, space_path)
        # a resumed study keeps its data settings unless the request gives others
        resumed = {attr: study0.user_attrs[key] for attr, key in (
            ("data", "data_override"), ("val_pattern", "val_pattern"),
            ("test_pattern", "test_pattern"), ("test_data", "test_data"))
            if getattr(req, attr) is None and study0.user_attrs.get(key)}
        req = dataclasses.replace(req, **resumed)  # a copy: the caller's request stays as it was
    store = artifact_store(runs_dir)
    # data first: a bad folder must fail before a study is created for it
    data_cfg = data_config(space, req.data, req.val_pattern, req.test_pattern, req.test_data,
                           req.num_workers)
    _check_test_folder(data_cfg.test_source)
    if not created:
        data_cfg, note = pin_old_normalisation(study0, data_cfg)
        notes += [note] if note else []
    strategy = _strategy(req, space, None if created else study0)
    plan = get_strategy(strategy)
    objective = plan.objective(space, data_cfg, runs_dir, name, req.device, listener, store)
    notes += getattr(objective, "notes", [])
    identity = _data_identity(objective, None if created else study0, req, notes)
    objective.noise = _noise_note(runs_dir, identity, req, notes)
    from ..data.split import non_finite_note

    notes += [n for n in [non_finite_note(data_cfg)] if n]
    seed = req.seed if req.seed is not None else space.search.seed
    sampler = plan.sampler(objective, make_sampler(req.sampler or space.search.sampler, space,
                                                   seed))
    pruner, note = make_pruner(req.pruner or space.search.pruner, space)
    notes += [note] if note else []
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True,
        directions=[DIRECTIONS[o] for o in space.objectives])
    if created:
        _record_request(study, req, space, space_path, strategy)
    with warnings.catch_warnings():  # experimental in optuna 5; what the dashboard shows
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAMES[o] for o in space.objectives])
    study.set_user_attr("artifact_dir", str(artifact_dir_for(runs_dir)))
    if identity is not None:
        study.set_user_attr("data_identity", identity)
    if not created:
        _fail_dead_trials(study)
    if space.search.baselines:
        enqueue_baselines(study, space, created)
    return SearchSession(study, objective.space, space_path, created, notes, objective, runs_dir,
                         req, strategy)


def _noise_note(runs_dir: Path, identity: dict | None, req: SearchRequest, notes: list[str]):
    """The data's stored noise record (quoted in the opening notes), or a note on how to
    measure one."""
    from ..stats.noise import load_record, sd_text

    rec = load_record(runs_dir, (identity or {}).get("signature"))
    if rec is not None:
        notes.append(sd_text(rec, 3))
    else:
        data = (f" --data {req.data}" if req.data else "") + (
            f" --runs-dir {runs_dir}" if Path(runs_dir) != Path(DEFAULT_RUNS) else "")
        notes.append(f"no noise check for this data yet: `nas-attn noise{data}` measures how "
                     "far seeds of one architecture disagree, the floor under which no "
                     "difference between trials means anything")
    return rec


def _strategy(req: SearchRequest, space: Space, study: optuna.Study | None) -> str:
    """The request's strategy, else the space's; a resumed study keeps its own."""
    asked = req.strategy or space.search.strategy
    get_strategy(asked)  # an unknown name: one line naming the accepted ones
    if study is None:
        return asked
    stored = study.user_attrs.get("strategy", "trials")
    if req.strategy and req.strategy != stored:
        raise StudyError(f"study {study.study_name!r} was searched with strategy {stored!r}; "
                         f"resume it with that strategy or choose a new --study name")
    return stored


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


