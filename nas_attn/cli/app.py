"""The `nas-attn` command line. The only layer that prints (with rich)."""
from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import DiskFullError, NasAttnError
from . import final
from ..searching import RunOptions, SearchRequest, search_options
from .options import CACHE, RUNS, STORAGE, cache_env, with_options
from .fmt import escape

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(help="Search which attention modules to put where in a segmentation UNet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
spaces_app = typer.Typer(help="List or check search spaces.", invoke_without_command=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
app.add_typer(data_app, name="data")

def _fmt_count(n: float) -> str:
    if math.isinf(n):
        return "∞ (continuous options)"
    return f"{n:,.0f}" if n < 1e7 else f"{n:.2e}"




# --------------------------------------------------------------------------------------------
# spaces
@spaces_app.callback()
def spaces(ctx: typer.Context):
    """List the ready search spaces with what each explores and how many architectures it allows."""
    if ctx.invoked_subcommand is not None:
        return
    from ..searching import SPACES_DIR, load_space, space_description

    table = Table(title=f"Search spaces in {escape(str(SPACES_DIR))}")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("architectures", justify="right")
    for path in sorted(SPACES_DIR.glob("*.yaml")):
        try:
            count = _fmt_count(load_space(path).count_architectures())
        except NasAttnError as e:
            count = f"[red]invalid: {escape(str(e))}[/red]"
        table.add_row(escape(path.stem), escape(space_description(path)), count)
    console.print(table)


@spaces_app.command("check")
def spaces_check(file: Path = typer.Argument(..., help="A YAML search space (or a ready name).")):
    """Validate one search space file."""
    from ..searching import load_space, resolve_space_path, smallest_fits

    space = load_space(file)
    too_big = smallest_fits(space)
    if too_big:
        raise NasAttnError(f"{resolve_space_path(file)}: {too_big}")
    console.print(f"[green]ok[/green] {escape(str(resolve_space_path(file)))}: "
                  f"{_fmt_count(space.count_architectures())} architectures, objectives "
                  f"{', '.join(space.objectives)}, {space.budget.epochs} epochs per trial")


# --------------------------------------------------------------------------------------------
# data
@data_app.command("check")
def data_check(path: Path = typer.Argument(..., help="Dataset folder: images/ + masks/, nnU-Net v2 raw or Decathlon.")):
    """Validate a dataset folder: every problem, with file names, and a summary."""
    from .data import data_check as run

    raise typer.Exit(run(path, console))


# --------------------------------------------------------------------------------------------
# search
@app.command()
@with_options(SearchRequest, RunOptions, extra=(inspect.Parameter(
    "cache_dir", inspect.Parameter.KEYWORD_ONLY, default=CACHE, annotation=Optional[Path]),))
def search(**options):
    """Run (or resume) an architecture search."""
    from .search import run_search_cli
    from ..searching import set_heartbeat_env

    run = RunOptions(**{f.name: options.pop(f.name) for f in search_options(RunOptions)})
    set_heartbeat_env(run.heartbeat_interval, run.grace_period, run.max_retry)
    cache_env(options.pop("cache_dir"), options["runs_dir"])
    space_given = options["space"] is not None
    req = SearchRequest(**{**options, "space": options["space"] or "default"})
    from ..searching import stored_space, worker_slots

    slots = worker_slots(req, run.workers, run.gpus, run.per_gpu)  # the library's rule
    if slots is not None:
        from .workers import run_workers_cli

        run_workers_cli(req, slots, not space_given, console)
        return
    if not space_given:
        req = dataclasses.replace(req, space=stored_space(req) or "default")
    run_search_cli(req, console)


@app.command("worker", hidden=True)
@with_options(SearchRequest, only_worker=True, required=("study", "storage", "space"),
              extra=(inspect.Parameter("index", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                                       default=typer.Option(0, "--index")),))
def worker(**options):
    """One worker process of `search --workers/--gpus` (started by it; talks over stdin/out)."""
    from ..searching import worker_main

    index = options.pop("index")
    seed = options["seed"]
    req = SearchRequest(**{**options, "seed": None if seed is None else seed + index})
    try:
        code = worker_main(req)
    except KeyboardInterrupt:
        from ..interrupts import acknowledge

        code = acknowledge()
    raise typer.Exit(code)


@app.command()
def show(
    study: Optional[str] = typer.Argument(None, help="Study name (default: the latest)."),
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
    top: int = typer.Option(15, "--top", help="Rows in the leaderboard."),
):
    """Leaderboard, best architecture, gain over the baselines, parameter importances."""
    from .search import show_study

    show_study(study, storage, runs_dir, top, console)


# --------------------------------------------------------------------------------------------
# train
@app.command()
def train(
    arch: Optional[Path] = typer.Option(None, "--arch", help="Architecture JSON (UNetArch)."),
    from_study: Optional[str] = typer.Option(None, "--from-study", help="Retrain a trial of this study."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Trial number (default: the best)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset folder, builtin or "
                                       "builtin3d (default: the study's data with --from-study, "
                                       "else builtin)."),
    val_pattern: Optional[str] = typer.Option(None, "--val-pattern", help="Glob on sample "
                                              "names that selects validation samples."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    normalisation: Optional[str] = typer.Option(
        None, "--normalisation", help="How raw intensities become the input: dataset (one "
        "range fitted on the training images), image (each image's own), none, or auto "
        "(default: dataset in 2D, image in 3D; a study's trial keeps its own)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/train/<name>)."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that holds other files."),
    device: Optional[str] = typer.Option(None, "--device"),
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
    num_workers: Optional[int] = typer.Option(None, "--num-workers", min=0, help="Training "
                                              "data loader workers (default: 0 on CPU, several "
                                              "on CUDA)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the training "
                                       "forward (pays off over long runs, mostly on CUDA)."),
    cache_dir: Optional[Path] = CACHE,
):
    """Train one architecture with the full budget; writes checkpoint, metrics and a preview."""
    from ..api import plan_training
    from .train import run_train

    cache_env(cache_dir, runs_dir)
    if (arch is None) == (from_study is None):
        raise NasAttnError("give exactly one of --arch FILE or --from-study STUDY")
    data_options = {k: v for k, v in (("val_pattern", val_pattern), ("num_workers", num_workers),
                                      ("normalisation", normalisation)) if v is not None}
    plan = plan_training(arch, data, from_study=from_study, trial=trial, storage=storage,
                         runs_dir=runs_dir, epochs=epochs, out_dir=out, device=device,
                         data_options=data_options, force=force)
    run_train(plan, console, compile_model=compile_model)


# --------------------------------------------------------------------------------------------
# finalize and noise (their options and functions: `final`)
app.command("finalize")(final.finalize_command)
app.command("noise")(final.noise_command)


# --------------------------------------------------------------------------------------------
# export and dashboard
@app.command()
def export(
    study: Optional[str] = typer.Argument(None, help="Study name (default: the latest)."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Trial number (default: the best)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/export/<study>_trial<N>)."),
    fmt: list[str] = typer.Option([], "--format", help="Also write onnx and/or torchscript; "
                                  "or `nnunet`: only an nnU-Net v2 plans file that trains the "
                                  "architecture (needs --nnunet-plans)."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that holds other files."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Export a `nas-attn "
                                              "train` output (its folder or best.pt) instead "
                                              "of a study trial."),
    nnunet_plans: Optional[Path] = typer.Option(None, "--nnunet-plans", help="With --format "
                                                "nnunet: the nnUNetPlans.json of the dataset "
                                                "(nnUNetv2_plan_and_preprocess wrote it)."),
    configuration: str = typer.Option("3d_fullres", "--configuration", help="With --format "
                                      "nnunet: the nnU-Net configuration (2d, 3d_fullres, ...)."),
    plans_name: str = typer.Option("nasAttnPlans", "--plans-name", help="With --format "
                                   "nnunet: the new plans' name (nnUNetv2_train -p NAME)."),
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
):
    """Write the chosen architecture as a standalone PyTorch file (model.py) with its weights;
    or, with --format nnunet, as an nnU-Net v2 plans file that trains it with nnU-Net."""
    from .export import export_cli

    if "nnunet" in fmt:
        from .export import export_nnunet_cli

        if len(fmt) > 1 or checkpoint is not None or out is not None:
            raise NasAttnError("--format nnunet writes only the plans file: give it alone, "
                               "without --checkpoint or --out")
        export_nnunet_cli(study, trial, nnunet_plans, configuration, plans_name, storage,
                          runs_dir, console, force=force)
        return
    if checkpoint is not None:
        if study is not None or trial is not None:
            raise NasAttnError("give a study (and --trial) or --checkpoint, not both")
        from .export import export_checkpoint_cli

        export_checkpoint_cli(checkpoint, out, tuple(fmt), runs_dir, console, force=force)
        return
    export_cli(study, trial, out, tuple(fmt), storage, runs_dir, console, force=force)


# --------------------------------------------------------------------------------------------
# predict and evaluate
MODEL = typer.Option(..., "--model", help="Export folder (model.py + weights.pt), checkpoint, "
                     "or `nas-attn train` output folder.")


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders of them."),
    model: Path = MODEL,
    out: Path = typer.Option(..., "--out", help="Folder for the masks (same names and formats)."),
    tta: bool = typer.Option(False, "--tta", help="Average over flips of every spatial axis "
                             "(not for left/right-lateralised classes)."),
    force: bool = typer.Option(False, "--force", help="Overwrite masks that already exist."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps."),
    batch: int = typer.Option(4, "--batch", min=1, help="Sliding-window patches per forward pass."),
    accept_mismatch: bool = typer.Option(False, "--accept-mismatch", help="Use an export "
                                         "folder whose files differ from the hashes its "
                                         "meta.json records (knowingly)."),
):
    """Segment new images: masks in the input's format (NIfTI keeps affine and header)."""
    from .predict import predict_cli

    raise typer.Exit(predict_cli(model, inputs, out, tta=tta, force=force, device=device,
                                 batch=batch, console=console, err=err_console,
                                 accept_mismatch=accept_mismatch))


@app.command()
def evaluate(
    model: Path = MODEL,
    data: Path = typer.Option(..., "--data", help="Labelled folder (images/, masks/) the "
                              "model never saw."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the scores here."),
    tta: bool = typer.Option(False, "--tta", help="Average over flips of every spatial axis."),
    hd95: bool = typer.Option(True, "--hd95/--no-hd95", help="95th-percentile Hausdorff distance."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps."),
    batch: int = typer.Option(4, "--batch", min=1, help="Sliding-window patches per forward pass."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    accept_mismatch: bool = typer.Option(False, "--accept-mismatch", help="Use an export "
                                         "folder whose files differ from the hashes its "
                                         "meta.json records (knowingly)."),
):
    """Score a model on a labelled folder: pooled per-class Dice (the search's score), IoU, HD95."""
    from .predict import evaluate_cli

    evaluate_cli(model, data, json_path=json_path, tta=tta, hd95=hd95, device=device,
                 batch=batch, console=console, force=force, accept_mismatch=accept_mismatch)


@app.command()
def dashboard(
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (localhost by default)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
):
    """Open the studies in optuna-dashboard (with the trial artifacts)."""
    from .export import dashboard_cli

    dashboard_cli(storage, runs_dir, host, port, console)


def _notes_for_warnings() -> None:
    """The package's own warnings (`NasAttnWarning`) as one `note:` line on stderr, each
    once; every other warning as Python shows it."""
    import warnings

    from ..errors import NasAttnWarning

    shown = warnings.showwarning
    warnings.simplefilter("once", NasAttnWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, NasAttnWarning):
            err_console.print(f"[yellow]note:[/yellow] {escape(str(message))}",
                              highlight=False, soft_wrap=True)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _quiet_trial_failures(record: logging.LogRecord) -> bool:
    """Optuna's warnings on a failed trial: a trial failed on purpose (diverged, Ctrl-C) keeps
    one line without the traceback (its reason is in fail_reason and the leaderboard); a full
    disk or a failing storage none (the command's own error line follows); "failed with value
    None" none."""
    from ..searching import is_storage_error

    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, DiskFullError) or is_storage_error(error):
        return False
    if isinstance(error, (NasAttnError, KeyboardInterrupt)):
        record.exc_info, record.exc_text = None, None
    return not record.getMessage().endswith("failed with value None.")


def _quiet_after_interrupt(record: logging.LogRecord) -> bool:
    """SQLAlchemy logs the cursor it could not close when a signal stopped a query (with a
    traceback of the interrupt): after an interrupt that is the interrupt's doing, said in
    the command's own line."""
    from ..interrupts import interrupted

    return not record.name.startswith("sqlalchemy") or interrupted() is None


def main(argv: list[str] | None = None) -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI draws its own progress
    from ..searching import OPTIMIZE_LOGGER

    logging.getLogger(OPTIMIZE_LOGGER).addFilter(_quiet_trial_failures)
    if logging.lastResort is not None:  # where records of loggers without handlers go
        logging.lastResort.addFilter(_quiet_after_interrupt)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    _notes_for_warnings()
    from .. import notices

    notices.PRINT = lambda line: err_console.print(escape(line), highlight=False)
    # timm < 1.0.23 (what nnunetv2's network package allows) uses an API torch 2.14 deprecates
    warnings.filterwarnings("ignore", message=".*torch.jit.interface.* is deprecated",
                            category=FutureWarning)
    from ..atomic import disk_full_error, is_disk_full
    from ..searching import is_storage_error, storage_error

    try:
        app(args=argv, standalone_mode=True)  # a KeyboardInterrupt ends as typer.Exit(130)
    except Exception as e:  # noqa: BLE001  (anything else is a bug: its traceback shows)
        if isinstance(e, OSError) and is_disk_full(e) and not isinstance(e, NasAttnError):
            e = disk_full_error(e.filename or "a file this command writes", e)
        elif is_storage_error(e):  # a command that did not say which storage (finalize, ...)
            e = storage_error(e)
        if not isinstance(e, NasAttnError):
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
