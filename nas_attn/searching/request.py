"""The search's options, declared once.

`SearchRequest` is what to search (space, data, study, sampler, ...) and `RunOptions` how to run
it (worker processes, GPUs, the heartbeat). Each option is a dataclass field made by `option()`,
whose metadata holds its help line, its lower bound and whether worker processes get it. From
these fields the command line builds the options of `nas-attn search` and `nas-attn worker`
(`nas_attn.cli.options`), `api.search` checks its arguments (`check_args`) and `parallel` writes
the options it passes on to its workers (`worker_options`). A new option is one field here;
`tests/test_search_options.py` checks that the command line, `api.search` and the workers
follow.

Library code: it prints nothing.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import bool_arg, number_arg, path_arg
from ..paths import DEFAULT_RUNS


def option(default: Any = None, help: str = "", *, low: float | None = None,  # noqa: A002
           worker: bool = False, cli_default: Any = dataclasses.MISSING) -> Any:
    """A field that is a search option: `help` is its one line in `--help`; `low` the least
    number accepted; `worker`: worker processes get it too; `cli_default`: the command line's
    default when it differs (None meaning "decided later", as for --space)."""
    return field(default=default, metadata={
        "help": help, "low": low, "worker": worker,
        "cli_default": default if cli_default is dataclasses.MISSING else cli_default})


@dataclass
class SearchRequest:
    """What to search. Fields made by `option()` are the search options; the others are filled
    in while the search is opened."""

    space: str | Path = option("default", "YAML file or ready space name (default: the one "
                               "stored with --study if it exists, else `default`).",
                               worker=True, cli_default=None)
    data: str | None = option(None, "Dataset folder, builtin or builtin3d (default: the "
                              "space's data, usually the built-in generator).", worker=True)
    val_pattern: str | None = option(None, "Glob on sample names that selects validation "
                                     "samples (overrides the space's data.val_pattern).",
                                     worker=True)
    test_pattern: str | None = option(None, "Glob on sample names held out as the test split "
                                      "(never trained or chosen on; scored by `finalize`).")
    test_data: str | None = option(None, "A separate test folder, recorded for `finalize`.")
    trials: int | None = option(None, "Trials to run now (default: the space's search.trials); "
                                "one-shot: new placements to score (default: "
                                "search.oneshot.trials).", low=1)
    timeout: float | None = option(None, "Stop starting trials after S seconds.", low=1)
    study: str | None = option(None, "Study name (resumes if it exists; default: the space's "
                               "name).", worker=True)
    storage: str | None = option(None, "Optuna storage URL (default: sqlite under --runs-dir); "
                                 "`journal:PATH` for a journal file.", worker=True)
    runs_dir: Path = option(DEFAULT_RUNS, "Where studies, checkpoints and artifacts go.",
                            worker=True)
    device: str | None = option(None, "auto, cpu, cuda, cuda:1, mps.", worker=True)
    sampler: str | None = option(None, "tpe, random, gp, nsga2, brute.", worker=True)
    pruner: str | None = option(None, "hyperband, sha, median, none.", worker=True)
    seed: int | None = option(None, "Seed of the sampler (default: the space's search.seed; "
                              "worker i gets seed + i).", low=0, worker=True)
    num_workers: int | None = option(None, "Training data loader workers (default: 0 on CPU, "
                                     "several on CUDA).", low=0, worker=True)
    strategy: str | None = option(None, "trials (train every candidate; the default) or "
                                  "oneshot (train one weight-sharing supernet, then score "
                                  "--trials new placements with its weights; default: the "
                                  "space's search.strategy; a resumed study keeps its own).")
    force_data: bool = option(False, "Resume a study on other data than it was created with "
                              "(refused otherwise; its identity is replaced).")
    notes: list[str] = field(default_factory=list)
    """Lines for the search's opening (filled while it is opened; not an option)."""

    def resume_command(self, study_name: str) -> str:
        """The command that resumes `study_name` where this request found it: with its
        --storage and --runs-dir when they are not the defaults (without them the command
        would open the default storage and start a new study)."""
        cmd = f"nas-attn search --study {study_name}"
        if self.storage is not None:
            from .study import redact

            cmd += f" --storage {redact(self.storage)}"
        if Path(self.runs_dir) != Path(DEFAULT_RUNS):
            cmd += f" --runs-dir {self.runs_dir}"
        return cmd


@dataclass
class RunOptions:
    """How a search runs: in this process or in worker processes, and how dead workers are
    found (RDB and journal storages; docs/scale-out.md)."""

    workers: int | None = option(None, "Worker processes on this machine, sharing its CPU "
                                 "cores (see Scale out).", low=1)
    gpus: str | None = option(None, "One worker per listed GPU: 0,1,2,3 or all.")
    per_gpu: int = option(1, "Workers per GPU with --gpus.", low=1)
    heartbeat_interval: int | None = option(None, "Seconds between heartbeats of a running "
                                            "trial (RDB storages; default 30).", low=1)
    grace_period: int | None = option(None, "Seconds without heartbeat before a trial counts "
                                      "as dead and is retried (default 120).", low=1)
    max_retry: int | None = option(None, "Retries of a dead worker's trial (default 2).",
                                   low=0)


def search_options(cls: type = SearchRequest) -> list[dataclasses.Field]:
    """The option fields of `cls` (SearchRequest or RunOptions), in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def option_types(cls: type) -> dict[str, Any]:
    """Each option's type, resolved (the annotations are strings here)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in search_options(cls)}


WHAT = {"space": "a ready space name or the path of a YAML file",
        "gpus": "a string such as '0,1' or 'all'"}
"""What a text option accepts, where "a string" would say too little."""


def check_args(cls: type, values: dict[str, Any]) -> None:
    """`api.search`'s argument checks, by each option's type and lower bound: one NasAttnError
    line naming the argument, what it got and what is accepted."""
    types = option_types(cls)
    for f in search_options(cls):
        value, kind = values[f.name], types[f.name]
        args = set(typing.get_args(kind)) or {kind}
        optional = type(None) in args
        if bool in args:
            bool_arg(value, f.name)
        elif int in args or float in args:
            number_arg(value, f.name, f.metadata["low"] or 0, integer=float not in args,
                       optional=optional)
        else:
            path_arg(value, f.name, WHAT.get(f.name, "a string"), optional=optional)


def worker_options(req: SearchRequest, fixed: dict[str, Any]) -> list[str]:
    """`nas-attn worker` options for the worker options of `req`: `fixed` values first (the
    resolved study, storage, paths and seed), then every other worker option that is set."""
    args: list[str] = []
    for f in search_options(SearchRequest):
        if not f.metadata["worker"]:
            continue
        value = fixed[f.name] if f.name in fixed else getattr(req, f.name)
        if value is not None:
            args += ["--" + f.name.replace("_", "-"), str(value)]
    return args
