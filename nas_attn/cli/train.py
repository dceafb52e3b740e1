"""`nas-attn train`: the plan and a progress bar around `nas_attn.api.run_plan`, then a summary.

The work (resolving the architecture, adapting it to the data, the training, best.pt,
metrics.json, preview.png) is `nas_attn.api.plan_training` / `run_plan`.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table

from ..api import TrainPlan, run_plan
from ..errors import DiskFullError
from ..training import TrainResult
from .fmt import escape


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
    ci = best.get("dice_ci") or {}
    if ci.get("low") is not None:
        t.add_row("val Dice 95 % CI", f"[{max(0.0, ci['low']):.4f}, {min(1.0, ci['high']):.4f}] "
                  "over the validation cases (one seed: training noise not counted; "
                  "`nas-attn noise` measures it)")
    t.add_row("val IoU", f"{best.get('iou', float('nan')):.4f}")
    if "hd95" in best:
        t.add_row("val HD95", f"{best['hd95']:.2f} "
                  + ("mm" if best.get("hd95_unit") == "mm" else "px"))
    t.add_row("throughput", f"{result.images_per_s:.1f} images/s (training)")
    t.add_row("time", f"{result.seconds:.1f} s")
    t.add_row("checkpoint", str(result.checkpoint) if result.checkpoint else "—")
    t.add_row("metrics", str(out_dir / "metrics.json"))
    if (out_dir / "preview.png").exists():
        t.add_row("preview", str(out_dir / "preview.png"))
    return t


def run_train(plan: TrainPlan, console: Console, *, compile_model: bool = False) -> TrainResult:
    """Print the plan, train with a progress bar, print the summary."""
    console.print(f"training {escape(plan.origin)}", highlight=False)
    if plan.changes:
        console.print(f"[yellow]adapted the architecture to the data:[/yellow] "
                      f"{escape(', '.join(plan.changes))}")
    console.print(f"training on {len(plan.train_data)} samples, validating on "
                  f"{len(plan.val_data)} ({escape(plan.data_cfg.source)}); output in "
                  f"{escape(str(plan.out_dir))}", highlight=False)
    if plan.augment_note:
        console.print(f"[yellow]augmentation:[/yellow] {escape(plan.augment_note)}",
                      highlight=False)
    if plan.data_note:
        console.print(f"[yellow]note:[/yellow] {escape(plan.data_note)}", highlight=False)
    with _progress(console) as bar:
        task = bar.add_task("epoch 1", total=None, loss="—", dice="—", ips="—")
        dice = {"last": "—"}

        def on_step(info) -> None:
            dice["training"] = info.epoch
            bar.update(task, total=info.total_steps, completed=info.global_step,
                       description=f"epoch {info.epoch}/{info.epochs}", loss=f"{info.loss:.4f}",
                       ips=f"{info.images_per_s:.1f}", dice=dice["last"])

        def on_epoch(epoch: int, metrics: dict) -> None:
            dice["last"], dice["epoch"] = f"{metrics['dice']:.4f}", epoch
            bar.update(task, dice=dice["last"])

        try:
            result = run_plan(plan, progress=on_step, on_epoch=on_epoch,
                              compile_model=compile_model)
        except KeyboardInterrupt:
            from ..interrupts import acknowledge

            code = acknowledge(said=True)
            bar.stop()
            done = dice.get("epoch", 0)
            kept = (f"best.pt holds the best evaluated epoch up to {done}" if done else
                    "no epoch was evaluated yet, so nothing was kept")
            console.print(f"[yellow]interrupted:[/yellow] training stopped in epoch "
                          f"{dice.get('training', 1)} of {plan.cfg.epochs}; {kept} "
                          f"({escape(str(plan.out_dir))})", highlight=False)
            raise typer.Exit(code) from None
        except DiskFullError as e:
            done = dice.get("epoch", 0)  # the last evaluated epoch
            kept = f" (best.pt holds the best evaluated epoch up to {done})" if done else ""
            at = dice.get("training", 1)
            when = (f"after the last epoch ({plan.cfg.epochs})" if done >= plan.cfg.epochs
                    else f"in epoch {at} of {plan.cfg.epochs}")
            raise DiskFullError(f"{e}; training stopped {when}{kept}; free some space and run "
                                "the command again", e.path) from None
        bar.update(task, completed=result.steps, total=result.steps)
    console.print(summary_table(result, plan.out_dir))
    return result
