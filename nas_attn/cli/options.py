"""The commands' shared options (--runs-dir, --storage, --cache-dir) and the `nas-attn search`
command's options (typer declarations), apart from the commands so that their functions stay
readable."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

RUNS = typer.Option(Path("runs"), "--runs-dir", help="Where studies, checkpoints and artifacts go.")
CACHE = typer.Option(None, "--cache-dir", help="Where 3D data folders are decoded to, once, and "
                     "read from patch by patch (default: $NAS_ATTN_CACHE_DIR, else "
                     "<runs-dir>/cache).")
STORAGE = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite under "
                       "--runs-dir); `journal:PATH` for a journal file.")


def cache_env(cache_dir: Optional[Path], runs_dir: Path) -> None:
    """The preprocessed cache's folder, for this process and the workers it starts
    (`nas_attn.data.cache`): --cache-dir, else $NAS_ATTN_CACHE_DIR, else <runs-dir>/cache."""
    from ..data.cache import ENV_DIR

    if cache_dir is not None:
        os.environ[ENV_DIR] = str(cache_dir)
    elif not os.environ.get(ENV_DIR):
        os.environ[ENV_DIR] = str(Path(runs_dir) / "cache")


SEARCH_SPACE = typer.Option(None, "--space", help="YAML file or ready space name "
                            "(default: the one stored with --study if it exists, "
                            "else `default`).")
SEARCH_DATA = typer.Option(None, "--data", help="Dataset folder (default: the "
                           "space's data, usually the built-in generator).")
SEARCH_VAL_PATTERN = typer.Option(None, "--val-pattern", help="Glob on sample "
                                  "names that selects validation samples.")
SEARCH_TEST_PATTERN = typer.Option(None, "--test-pattern", help="Glob on sample "
                                   "names held out as the test split (scored only by "
                                   "`finalize`).")
SEARCH_TEST_DATA = typer.Option(None, "--test-data", help="A separate test folder, "
                                "recorded for `finalize`.")
SEARCH_TRIALS = typer.Option(None, "--trials", min=1, help="Trials to run now "
                             "(default: the space's search.trials); one-shot: new "
                             "placements to score (default: search.oneshot.trials).")
SEARCH_TIMEOUT = typer.Option(None, "--timeout", min=1, help="Stop starting trials after S seconds.")
SEARCH_STUDY = typer.Option(None, "--study", help="Study name (resumes if it exists; "
                            "default: the space's name).")
SEARCH_DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps.")
SEARCH_SAMPLER = typer.Option(None, "--sampler", help="tpe, random, gp, nsga2, brute.")
SEARCH_PRUNER = typer.Option(None, "--pruner", help="hyperband, sha, median, none.")
SEARCH_SEED = typer.Option(None, "--seed")
SEARCH_NUM_WORKERS = typer.Option(None, "--num-workers", min=0, help="Training "
                                  "data loader workers (default: 0 on CPU, several "
                                  "on CUDA).")
SEARCH_STRATEGY = typer.Option(
    None, "--strategy", help="trials (train every candidate; the default) or oneshot (train "
    "one weight-sharing supernet, then score --trials new placements with its weights; "
    "default: the space's search.strategy).")
SEARCH_WORKERS = typer.Option(None, "--workers", help="Worker processes on this "
                              "machine, sharing its CPU cores (see Scale out).")
SEARCH_GPUS = typer.Option(None, "--gpus", help="One worker per listed GPU: "
                           "0,1,2,3 or all.")
SEARCH_PER_GPU = typer.Option(1, "--per-gpu", help="Workers per GPU with --gpus.")
SEARCH_HEARTBEAT_INTERVAL = typer.Option(
    None, "--heartbeat-interval", help="Seconds between heartbeats of a running trial "
    "(RDB storages; default 30).")
SEARCH_GRACE_PERIOD = typer.Option(
    None, "--grace-period", help="Seconds without heartbeat before a trial counts as "
    "dead and is retried (default 120).")
SEARCH_MAX_RETRY = typer.Option(None, "--max-retry", help="Retries of a dead "
                                "worker's trial (default 2).")
SEARCH_FORCE_DATA = typer.Option(False, "--force-data", help="Resume a study on other data "
                                 "than it was created with (refused otherwise).")
