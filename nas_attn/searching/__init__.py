"""Searching: spaces, the study, the strategies, workers, reports and finalize.

Where to start: `opening.open_search(SearchRequest)` opens (or resumes) a study and returns a
`SearchSession`; `run.run_search(session, trials, timeout)` runs it; `finalize.py` and
`racing.py` retrain the best at the full budget.

The space and its trials
- `space`         the search space schema (pydantic), `STRATEGIES`, `full_budget`.
- `space_files`   reading a space file (ready spaces, YAML errors in one line).
- `sampling`      a trial's architecture and training choices from the space; the baselines.
- `cost`          parameters, FLOPs, activation memory and latency before training.
- `strategy`      the seam: `Strategy`, per-trial search (`Trials`), `get_strategy`.
- `objective`     the per-trial objective (train a candidate, report epochs, prune).
- `oneshot/`      the one-shot strategy (supernets, placements scored with inherited weights).
- `curves`        a trial's learning-curve picture.

A study and its run
- `request`       the search's options, declared once (`SearchRequest`, `RunOptions`): the
                  command line, `api.search` and the workers are made from them.
- `opening`       the study (storage, sampler, pruner, strategy), the session.
- `run`           the optimize loop of one process.
- `study`         storages and their errors; `optuna_adapter`: every use of optuna's private
                  API, tested against the installed one.
- `faults`        what stops a search (a full disk), in one line.
- `heartbeat`     dead workers' trials failed and retried.
- `parallel`, `slots`, `workers`, `worker_loop`: worker processes on one study.
- `artifacts`     the artifact store the dashboard serves.

Reading a study and deciding
- `report`        leaderboard rows, baselines, importances.
- `scores`        a trial's score with its interval, the same for both strategies.
- `finalize`      the retraining recipe and the finalize command's steps; `racing`: the race's
                  trainings and confirmation; `race_workers`, `claims`: the race on workers and
                  machines; `verdict`: the attention verdict and the result.
- `noise_check`   the plain UNet under several seeds (`nas-attn noise`).
- `trial_export`  a trial (or finalize's winner) to `nas_attn.exporting`.
"""
from __future__ import annotations

PUBLIC = {
    "request": ("SearchRequest", "RunOptions", "option_types", "search_options"),
    "opening": ("open_search",),
    "run": ("run_search",),
    "parallel": ("ParallelSearch", "open_parallel", "stored_space", "worker_slots"),
    "slots": ("Slot",),
    "workers": ("Supervisor",),
    "worker_loop": ("worker_main",),
    "heartbeat": ("set_heartbeat_env",),
    "optuna_adapter": ("OPTIMIZE_LOGGER",),
    "study": ("is_storage_error", "load_study", "open_existing_storage", "redact",
              "storage_error", "study_names"),
    "artifacts": ("artifact_dir_for",),
    "space": ("SPACES_DIR",),
    "space_files": ("load_space", "resolve_space_path", "space_description"),
    "cost": ("smallest_fits",),
    "strategy": ("get_strategy", "score_kind"),
    "report": ("baseline_gains", "best_trial", "importances", "leaderboard", "pareto_front",
               "trial_arch", "versus_best"),
    "scores": ("noise_for",),
    "finalize": ("candidates", "entrants_of", "finalize_study", "with_controls"),
    "verdict": ("ci_text", "gain_line", "proxy_line", "race_lines"),
    "trial_export": ("chosen_arch", "export_trial"),
}
"""The package's public surface, by module: what the command line (and any other caller above
this layer) imports, as `from nas_attn.searching import NAME`, loaded on first use (PEP 562) so
that starting the command line loads none of the search code (nor torch) until a command needs
it. Everything else here is internal to the package;
`tests/test_layout.py` checks that `nas_attn.cli` imports no module of it directly."""

__all__ = sorted(n for names in PUBLIC.values() for n in names)
_OWNER = {n: m for m, names in PUBLIC.items() for n in names}


def _module(name: str):  # noqa: C901 - one plain import per module (no import strings)
    if name == "request": from . import request as m  # noqa: E701
    elif name == "opening": from . import opening as m  # noqa: E701
    elif name == "run": from . import run as m  # noqa: E701
    elif name == "parallel": from . import parallel as m  # noqa: E701
    elif name == "slots": from . import slots as m  # noqa: E701
    elif name == "workers": from . import workers as m  # noqa: E701
    elif name == "worker_loop": from . import worker_loop as m  # noqa: E701
    elif name == "heartbeat": from . import heartbeat as m  # noqa: E701
    elif name == "optuna_adapter": from . import optuna_adapter as m  # noqa: E701
    elif name == "study": from . import study as m  # noqa: E701
    elif name == "artifacts": from . import artifacts as m  # noqa: E701
    elif name == "space": from . import space as m  # noqa: E701
    elif name == "space_files": from . import space_files as m  # noqa: E701
    elif name == "cost": from . import cost as m  # noqa: E701
    elif name == "strategy": from . import strategy as m  # noqa: E701
    elif name == "report": from . import report as m  # noqa: E701
    elif name == "scores": from . import scores as m  # noqa: E701
    elif name == "finalize": from . import finalize as m  # noqa: E701
    elif name == "verdict": from . import verdict as m  # noqa: E701
    elif name == "trial_export": from . import trial_export as m  # noqa: E701
    else: raise KeyError(name)  # noqa: E701
    return m


def __getattr__(name: str):
    if name not in _OWNER:
        raise AttributeError(f"module 'nas_attn.searching' has no attribute {name!r}")
    # read from its module each time (not cached here): a module's attribute replaced later
    # (a test's monkeypatch) is what callers get
    return getattr(_module(_OWNER[name]), name)
