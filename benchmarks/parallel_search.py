"""Scale-out: trials/hour with 2 workers against 1, and storage time per trial, from one run.

    python benchmarks/parallel_search.py [--trials 6] [--rounds 3] [--skip-throughput]
                                         [--skip-storage] [--reference-trial-s S]
                                         [--out results.json]

1. Completed trials per hour of `nas-attn search --workers 2` against one worker (the same
   command with `--workers 1`, in-process) on the same small CPU-bound space and the journal
   file, each measured from the first trial's start to the last trial's end (process start-up
   excluded); rounds alternate 1 worker (all cores as threads), 1 worker (1 thread) and 2
   workers (1 thread each); the median ratios count. Target: >= 1.6x on a 2-core machine.
2. Milliseconds per trial spent in storage calls (every method of the study's storage object,
   timed, heartbeat thread included) on SQLite, the journal file (the one-node default for
   several workers) and PostgreSQL (a throwaway server as in the tests, skipped when the
   binaries are absent), for trials of the default space: same sampling, attributes and
   per-epoch reports as a real default-space trial (15 epochs), with the training shortened
   (`samples_per_epoch` 4, 24 px images) so only the storage pattern is what counts. As a share
   of a real default-space trial, measured in the same run (one trial, SQLite), unless
   `--reference-trial-s` is given. Target: < 2 %.

The machine is shared: absolute numbers are noisy; ratios less so.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

THROUGHPUT_SPACE = """
macro: {depth: [2], base_width: [8]}
encoder: {choices: [none, se, eca]}
skip: {choices: [none, gate]}
decoder: {choices: [none, eca, se]}
training: {batch_size: 4, lr: {low: 0.001, high: 0.01, log: true}}
budget: {epochs: 2, samples_per_epoch: 32}
data: {source: builtin, builtin_n: 16, builtin_size: 48}
search: {trials: 6, n_startup_trials: 2, sampler: random, pruner: none, baselines: false}
"""


def _env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PYTHONWARNINGS": "ignore"}


def throughput(workers: int, trials: int, tmp: Path, tag: str = "",
               threads: int | None = None) -> float:
    """Completed trials per hour, first trial start to last trial end."""
    d = tmp / f"w{workers}{tag}"
    d.mkdir()
    (d / "space.yaml").write_text(textwrap.dedent(THROUGHPUT_SPACE))
    journal = f"journal:{d / 'runs' / 'study.journal'}"
    cmd = [sys.executable, "-m", "nas_attn.cli", "search", "--space", str(d / "space.yaml"),
           "--trials", str(trials), "--study", "tp", "--storage", journal, "--runs-dir",
           str(d / "runs"), "--workers", str(workers), "--device", "cpu"]
    env = _env()
    env.pop("OMP_NUM_THREADS", None)  # each worker gets its share of the cores ...
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # ... or at most this many threads
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=d)
    from nas_attn.searching.study import open_storage

    study = optuna.load_study(study_name="tp", storage=open_storage(journal, d / "runs"))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) -
            min(t.datetime_start for t in done)).total_seconds()
    return len(done) / span * 3600.0


# ----- storage time --------------------------------------------------------------------------
class Timer:
    def __init__(self):
        self.seconds = 0.0
        self.calls = 0


def instrument(storage, timer: Timer) -> None:
    """Time every public method of `storage` (the object the study calls)."""
    from optuna.storages import BaseStorage

    names = {n for n in dir(BaseStorage) if not n.startswith("_")} | {"record_heartbeat"}
    for name in names:
        fn = getattr(storage, name, None)
        if not callable(fn):
            continue

        @functools.wraps(fn)
        def timed(*a, __fn=fn, **k):
            t0 = time.perf_counter()
            try:
                return __fn(*a, **k)
            finally:
                timer.seconds += time.perf_counter() - t0
                timer.calls += 1

        setattr(storage, name, timed)


def default_like_space(tmp: Path) -> Path:
    """The default space with a tiny training budget: its storage pattern, not its compute."""
    import yaml

    from nas_attn.searching.space import SPACES_DIR

    doc = yaml.safe_load((SPACES_DIR / "default.yaml").read_text())
    doc["budget"] = {**doc["budget"], "samples_per_epoch": 4}
    doc["budget"].pop("max_time_s", None)
    doc["data"] = {**doc.get("data", {}), "source": "builtin", "builtin_n": 6,
                   "builtin_size": 24}
    doc["data"].pop("patch_size", None)
    doc["constraints"] = {}
    doc["search"] = {**doc.get("search", {}), "pruner": "none", "baselines": False}
    p = tmp / "default_like.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def storage_ms_per_trial(url: str, space: Path, runs: Path, trials: int) -> tuple[float, float]:
    """(ms in storage calls per trial, calls per trial) for `trials` trials in-process."""
    from nas_attn.searching.opening import SearchRequest, open_search
    from nas_attn.searching.run import run_search

    session = open_search(SearchRequest(space=space, storage=url, runs_dir=runs,
                                        study="storage", device="cpu"))
    timer = Timer()
    instrument(session.study._storage, timer)
    run_search(session, trials, None)
    return timer.seconds * 1000.0 / trials, timer.calls / trials


def reference_trial_s(runs: Path) -> float:
    """Seconds of one real default-space trial (the plain UNet baseline), SQLite."""
    from nas_attn.searching.opening import SearchRequest, open_search
    from nas_attn.searching.run import run_search

    session = open_search(SearchRequest(space="default", runs_dir=runs, study="reference",
                                        device="cpu"))
    run_search(session, 1, None)
    t = session.study.trials[0]
    return (t.datetime_complete - t.datetime_start).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--storage-trials", type=int, default=3)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-storage", action="store_true")
    ap.add_argument("--reference-trial-s", type=float, default=None)
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nas_attn_parallel_"))
    from nas_attn.searching.slots import cpu_cores

    cores = cpu_cores()
    print(f"CPU cores: {cores} (shared machine: absolute numbers are noisy)")

    results, tables = {"cores": cores}, []
    if not args.skip_throughput:
        results["throughput"], t = run_throughput(args, tmp, cores)
        tables.append(t)
    if not args.skip_storage:
        results["storage"], t = run_storage(args, tmp)
        tables.append(t)
    if args.out:
        import results_file

        path = results_file.write(args.out, "parallel_search", vars(args), results, tables,
                                  device="cpu")
        print(f"written: {path}")


def run_throughput(args, tmp: Path, cores: int) -> tuple[dict, dict]:
    """Part 1, printed as it goes; the numbers and the table of what was printed."""
    from results_file import table

    print(f"\n1. completed trials/hour, {args.trials} trials per run, journal file, "
          f"{args.rounds} interleaved round(s)", flush=True)
    ratios, ratios1, per_round, rows, notes = [], [], [], [], []
    for r in range(args.rounds):
        one = throughput(1, args.trials, tmp, f"_{r}")
        one1 = throughput(1, args.trials, tmp, f"_{r}_t1", threads=1)
        two = throughput(2, args.trials, tmp, f"_{r}")
        ratios.append(two / one)
        ratios1.append(two / one1)
        per_round.append({"one": one, "one_1thread": one1, "two": two})
        rows.append([str(r + 1), f"{one:.1f}", f"{one1:.1f}", f"{two:.1f}"])
        print(f"   round {r + 1}: 1 worker ({cores} threads) {one:8.1f} /h, 1 worker "
              f"(1 thread) {one1:8.1f} /h, 2 workers (1 thread each) {two:8.1f} /h",
              flush=True)
    for label, rs in ((f"2 workers / 1 worker with {cores} threads", ratios),
                      ("2 workers / 1 worker with 1 thread", ratios1)):
        ratio = statistics.median(rs)
        notes.append(f"median ratio {label}: {ratio:.2f}x  (target >= 1.6x)  "
                     f"{'met' if ratio >= 1.6 else 'NOT met'}")
        print(f"   {notes[-1]}")
    return ({"rounds": per_round, "median_ratio": statistics.median(ratios),
             "median_ratio_1thread": statistics.median(ratios1)},
            table(f"Completed trials per hour, {args.trials} trials per run, journal file",
                  ["round", f"1 worker ({cores} threads) /h", "1 worker (1 thread) /h",
                   "2 workers (1 thread each) /h"], rows, notes))


def run_storage(args, tmp: Path) -> tuple[dict, dict]:
    """Part 2, printed; the numbers and the table of what was printed."""
    from results_file import table

    space = default_like_space(tmp)
    urls = {"sqlite": f"sqlite:///{tmp / 'st.db'}",
            "journal (one-node default)": f"journal:{tmp / 'st.journal'}"}
    pg = start_postgres(tmp)
    if pg is not None:
        urls["postgresql"] = pg[0]
    rows = []
    for name, url in urls.items():
        runs = tmp / f"runs_{len(rows)}"
        ms, calls = storage_ms_per_trial(url, space, runs, args.storage_trials)
        rows.append((name, ms, calls))
    ref = args.reference_trial_s
    if ref is None:
        ref = reference_trial_s(tmp / "runs_ref")
    head = (f"storage time per trial (default space's storage pattern: 15 epochs, "
            f"{args.storage_trials} trials each); reference: one default-space trial = "
            f"{ref:.1f} s")
    print(f"\n2. {head}")
    cells, notes = [], [head]
    for name, ms, calls in rows:
        share = ms / 1000.0 / ref
        cells.append([name, f"{ms:.1f}", f"{calls:.0f}", f"{100 * share:.3f} %", "< 2 %",
                      "met" if share < 0.02 else "NOT met"])
        print(f"   {name:28s} {ms:8.1f} ms/trial  {calls:6.0f} calls/trial  "
              f"{100 * share:6.3f} % of a trial  (target < 2 %) "
              f"{'met' if share < 0.02 else 'NOT met'}")
    if pg is None:
        notes.append("postgresql: skipped (no /usr/lib/postgresql/*/bin or no psycopg)")
        print(f"   {notes[-1]}")
    else:
        pg[1]()
    raw = {"reference_trial_s": ref,
           "per_storage": {n: {"ms_per_trial": ms, "calls_per_trial": c} for n, ms, c in rows}}
    return raw, table("Storage time per trial", ["storage", "ms/trial", "calls/trial",
                                                 "share of a trial", "target", "met"],
                      cells, notes)


def start_postgres(tmp: Path):
    """(url, stop) of a throwaway server, like tests/pg.py; None when impossible."""
    import glob
    import pwd
    import shutil
    import socket

    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        return None
    bindir = Path(bins[-1]).parent
    root = tempfile.mkdtemp(prefix="nas_attn_pg_")
    prefix = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(root) / "data"

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "optuna", "--auth=trust")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", f"{root}/log", "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start")
    run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna", "bench")

    def stop():
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql+psycopg://optuna@127.0.0.1:{port}/bench", stop


if __name__ == "__main__":
    main()
