"""`nas-attn predict` and `nas-attn evaluate`: progress and tables with rich; the work is in
`nas_attn.inference.prediction` and `nas_attn.inference.evaluation`."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..atomic import atomic_write
from ..errors import DiskFullError
from .fmt import escape


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[name]}"), TimeElapsedColumn(),
                    console=console, transient=False)


def _model_line(loaded) -> str:
    patch = "×".join(map(str, loaded.patch_size)) if loaded.patch_size else "none (one pass)"
    return (f"model {escape(loaded.source)} ({loaded.kind}): {escape(loaded.arch.summary())}; "
            f"patch {patch}, overlap {loaded.overlap:g}; device {loaded.device}")


def predict_cli(model: Path, inputs: list[Path], out: Path, *, tta: bool, force: bool,
                device: str | None, batch: int, console: Console, err: Console,
                accept_mismatch: bool = False) -> int:
    """Exit status: 0 when every input was written, 1 when any failed."""
    from ..inference.prediction import check_out_dir, expand_inputs, load_model, predict_files

    files, problems = expand_inputs(inputs)
    check_out_dir(files, out, inputs)  # before the model loads: one line, nothing written
    loaded = load_model(model, device, accept_mismatch=accept_mismatch)
    console.print(_model_line(loaded), highlight=False)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    for p in problems:
        err.print(f"[bold red]error:[/bold red] {escape(p)}", highlight=False, soft_wrap=True)
    written, failed = 0, len(problems)
    if files:
        with _progress(console) as bar:
            task = bar.add_task("predicting", total=len(files), name="")
            try:
                for res in predict_files(loaded, files, out, tta=tta, force=force, batch=batch):
                    if res.error:
                        failed += 1
                        bar.console.print(f"[bold red]error:[/bold red] {escape(res.error)}",
                                          highlight=False, soft_wrap=True)
                    else:
                        written += 1
                    if res.note:
                        bar.console.print(f"[yellow]note:[/yellow] {escape(res.note)}",
                                          highlight=False, soft_wrap=True)
                    bar.update(task, advance=1, name=escape(res.source.name))
            except DiskFullError as e:
                raise DiskFullError(
                    f"{e}; {written} of {len(files)} masks were written before it; free some "
                    "space and run the same command with --force to write them all",
                    e.path) from None
    console.print(f"{written} mask{'s' if written != 1 else ''} written to {escape(str(out))}"
                  + (f"; [red]{failed} failed[/red]" if failed else ""))
    return 1 if failed or not files else 0


def _fmt(v, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(ci) -> str:
    """A 95 % interval of a Dice score, shown within [0, 1]."""
    if not ci or ci[0] is None:
        return "—"
    return f"[{max(0.0, ci[0]):.3f}, {min(1.0, ci[1]):.3f}]"


def evaluate_cli(model: Path, data: Path, *, json_path: Path | None, tta: bool, hd95: bool,
                 device: str | None, batch: int, console: Console, force: bool = False,
                 accept_mismatch: bool = False) -> dict:
    from ..inference.evaluation import evaluate_folder
    from ..inference.prediction import InputError, load_model

    if json_path is not None:  # before any work, and never over a user's file unasked
        if json_path.is_dir():
            raise InputError(f"--json {json_path}: is a folder; name a file for the scores")
        if json_path.exists() and not force:
            raise InputError(f"--json {json_path}: the file exists; name a new file or pass "
                             "--force to overwrite it")
    loaded = load_model(model, device, accept_mismatch=accept_mismatch)
    console.print(_model_line(loaded), highlight=False)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    with _progress(console) as bar:
        task = bar.add_task("evaluating", total=None, name="")

        def step(i: int, n: int, name: str) -> None:
            bar.update(task, total=n, completed=i, name=escape(name))

        res = evaluate_folder(loaded, data, tta=tta, hd95=hd95, batch=batch, progress=step)
    table = Table(title=f"{escape(str(data))}: {res['images']} images",
                  caption="Dice and IoU pooled per class over the folder; HD95 per image, "
                          "averaged per class")
    table.add_column("class")
    table.add_column("Dice", justify="right")
    table.add_column("95 % CI", justify="right")
    table.add_column("IoU", justify="right")
    if hd95:
        unit = {"mm": "mm", "voxels": "px" if loaded.arch.spatial_dims == 2 else "voxels"}.get(
            res.get("hd95_unit", "voxels"), "mixed units")
        table.add_column(f"HD95 ({unit})", justify="right")
    for k in range(1, res["classes"]):
        ci = (res.get("dice_per_class_ci") or [None] * res["classes"])[k - 1]
        row = [f"{k} {escape(res['class_names'][k])}", _fmt(res["dice_per_class"][k - 1]),
               _ci(ci), _fmt(res["iou_per_class"][k - 1])]
        if hd95:
            row.append(_fmt(res["hd95_per_class"][k - 1], 2))
        table.add_row(*row)
    ci = res.get("dice_ci") or {}
    mean = ["[bold]mean[/bold]", f"[bold]{_fmt(res['dice'])}[/bold]",
            _ci(None if ci.get("low") is None else [ci["low"], ci["high"]]), _fmt(res["iou"])]
    if hd95:
        mean.append(_fmt(res.get("hd95"), 2))
    table.add_row(*mean)
    console.print(table)
    console.print(f"Dice {res['dice']:.4f} {_ci(None if ci.get('low') is None else [ci['low'], ci['high']])} "
                  f"(mean over the {res['classes_scored']} classes present; mean of per-image "
                  f"Dice {res['dice_per_image']:.4f}); intervals: {res['interval']}",
                  highlight=False)
    if json_path is not None:
        atomic_write(json_path, json.dumps(res, indent=2) + "\n")
        console.print(f"scores written to {escape(str(json_path))}")
    return res
