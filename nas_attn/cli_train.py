"""`nas-attn train`: load an architecture, train it with a progress bar, write the artifacts.

Thin: the work is `nas_attn.train.train`; this file reads the inputs, draws progress with rich
and prints a summary. Outputs in `out_dir`: `best.pt` (checkpoint), `metrics.json`,
`preview.png`.

An architecture whose `in_channels`, `classes`, `spatial_dims` or `aux_channels` differ from
the data is adapted to the data (the change is printed), so one JSON serves several datasets.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table

from .arch import UNetArch
from .errors import ArchError, DataError, DiskFullError
from .paths import claim_output_dir
from .train import TrainConfig, TrainResult, train
from .train.checkpoint import write_json
from .train.config import format_errors


def load_arch_file(path: Path) -> UNetArch:
    """The architecture in a JSON file; `ArchError` naming the file when missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ArchError(f"architecture file {str(path)!r} does not exist")
    try:
        return UNetArch.from_json(path.read_text())
    except ArchError as e:
        raise ArchError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchError(f"{path}: cannot read: {e}") from None


def adapt_arch(arch: UNetArch, data) -> tuple[UNetArch, list[str]]:
    """`arch` with in_channels / classes / spatial_dims / aux_channels taken from the data;
    the list of changes (empty when it already fits)."""
    wanted = {"spatial_dims": data.spatial_dims, "in_channels": data.in_channels,
              "classes": data.classes}
    if arch.aux_channels:
        if not data.aux_channels:
            raise ArchError(f"the architecture takes an auxiliary modality ({arch.aux_channels} "
                            f"channels) but the data has none")
        wanted["aux_channels"] = data.aux_channels
    changes = {k: (getattr(arch, k), v) for k, v in wanted.items() if getattr(arch, k) != v}
    if not changes:
        return arch, []
    try:
        new = dataclasses.replace(arch, **{k: v for k, (_, v) in changes.items()})
    except ArchError as e:
        raise ArchError("the architecture cannot be adapted to the data ("
                        + ", ".join(f"{k} {a} → {b}" for k, (a, b) in changes.items())
                        + f"): {e}") from None
    return new, [f"{k} {a} → {b}" for k, (a, b) in changes.items()]


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("Dice {task.fields[dice]}"), TextColumn("{task.fields[ips]} img/s"),
        TimeElapsedColumn(), console=console, transient=False)


def per_class_text(values) -> str:
    """Per-class scores as `1:0.812 2:— ...` (— where a class is in neither reference nor
    prediction)."""
    return " ".join(f"{k}:{'—' if v is None else f'{v:.3f}'}" for k, v in enumerate(values, 1))


def summary_table(result: TrainResult, out_dir: Path) -> Table:
    best = result.best
    t = Table(title="Training summary", show_header=False, expand=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("architecture", escape(result.arch.summary()))
    t.add_row("device", result.runtime.describe())
    t.add_row("epochs run", f"{len(result.history)} ({result.steps} steps, stopped: "
                            f"{result.stop_reason})")
    t.add_row("best epoch", str(best.get("epoch", "—")))
    per = best.get("dice_per_class") or []
    t.add_row("val Dice", f"{best.get('dice', float('nan')):.4f} (per class, pooled over the "
                          f"split; mean of per-image Dice {best.get('dice_per_image', float('nan')):.4f})"
              + (f"\n  per class {per_class_text(per)}" if len(per) > 1 else ""))
    t.add_row("val IoU", f"{best.get('iou', float('nan')):.4f}")
    if "hd95" in best:
        t.add_row("val HD95", f"{best['hd95']:.2f} px")
    t.add_row("throughput", f"{result.images_per_s:.1f} images/s (training)")
    t.add_row("time", f"{result.seconds:.1f} s")
    t.add_row("checkpoint", str(result.checkpoint) if result.checkpoint else "—")
    t.add_row("metrics", str(out_dir / "metrics.json"))
    if (out_dir / "preview.png").exists():
        t.add_row("preview", str(out_dir / "preview.png"))
    return t


def run_train(arch_path: Path | None = None, arch: UNetArch | None = None, data: str = "builtin",
              epochs: int | None = None, *, out_dir: Path = Path("runs/train/model"),
              device: str | None = None, console: Console | None = None,
              train_options: dict[str, Any] | None = None,
              data_options: dict[str, Any] | None = None, force: bool = False,
              compile_model: bool = False) -> TrainResult:
    """Train `arch` (or the JSON at `arch_path`; neither: the default plain UNet) on `data`
    ('builtin', 'builtin3d' or a folder) and write best.pt, metrics.json, preview.png to
    `out_dir`. `train_options` / `data_options` are extra TrainConfig / DataConfig fields;
    `compile_model` runs the training forward through torch.compile."""
    from .data import DataConfig, load_data

    console = console or Console()
    if arch_path is not None and arch is not None:
        raise ArchError("give an architecture file or an architecture, not both")
    if arch_path is not None:
        arch = load_arch_file(arch_path)
    elif arch is None:
        arch = UNetArch()
        console.print("no architecture given: training the plain UNet "
                      f"({escape(arch.summary())})")
    try:
        data_cfg = DataConfig(source=data, **(data_options or {}))
    except ValidationError as e:
        raise DataError("invalid data options:\n" + format_errors(e)) from None
    options = dict(train_options or {})
    if epochs is not None:
        options["epochs"] = epochs
    if device is not None:
        options["device"] = device
    cfg = TrainConfig.make(**options)

    train_data, val_data = load_data(data_cfg)
    arch, changes = adapt_arch(arch, train_data)
    out_dir = claim_output_dir(out_dir, "train", force=force)  # before any training
    if changes:
        console.print(f"[yellow]adapted the architecture to the data:[/yellow] {', '.join(changes)}")
    console.print(f"training on {len(train_data)} samples, validating on {len(val_data)} "
                  f"({data_cfg.source}); output in {out_dir}")
    from .data import symmetry_plan

    note = symmetry_plan(train_data, data_cfg).note
    if note:
        console.print(f"[yellow]augmentation:[/yellow] {escape(note)}", highlight=False)

    with _progress(console) as bar:
        task = bar.add_task("epoch 1", total=None, loss="—", dice="—", ips="—")
        dice = {"last": "—"}

        def on_step(info) -> None:
            bar.update(task, total=info.total_steps, completed=info.global_step,
                       description=f"epoch {info.epoch}/{info.epochs}", loss=f"{info.loss:.4f}",
                       ips=f"{info.images_per_s:.1f}", dice=dice["last"])

        def on_epoch(epoch: int, metrics: dict) -> None:
            dice["last"], dice["epoch"] = f"{metrics['dice']:.4f}", epoch
            bar.update(task, dice=dice["last"])

        try:
            result = train(arch, train_data, val_data, data_cfg, cfg, on_epoch=on_epoch,
                           out_dir=out_dir, progress=on_step, compile_model=compile_model)
        except DiskFullError as e:
            done = dice.get("epoch", 0)
            kept = f" (best.pt holds the best of epochs 1-{done})" if done else ""
            raise DiskFullError(f"{e}; training stopped in epoch {done + 1} of {cfg.epochs}"
                                f"{kept}; free some space and run the command again",
                                e.path) from None
        bar.update(task, completed=result.steps, total=result.steps)

    write_json(out_dir / "metrics.json", {
        "arch": arch.to_dict(), "arch_summary": arch.summary(), "best": result.best,
        "history": result.history, "images_per_s": result.images_per_s,
        "seconds": result.seconds, "steps": result.steps, "stop_reason": result.stop_reason,
        "device": result.runtime.describe(),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "train_config": cfg.model_dump(mode="json"),
        "data_config": data_cfg.model_dump(mode="json"),
    })
    console.print(summary_table(result, out_dir))
    return result
