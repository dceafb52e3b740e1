"""What the API's verbs resolve before they work: a stored study by name, a `train` run planned
whole (its architecture adapted to the data, its configurations, its output folder claimed)
and run (best.pt, metrics.json with the best epoch's interval)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .architecture.description import UNetArch
from .arguments import number_arg, path_arg
from .errors import ArchError, DataError

if TYPE_CHECKING:
    import optuna

    from .training import TrainResult


def open_study(study, storage: str | None, runs_dir: str | Path) -> optuna.Study:
    """`study` itself when it is one, else the stored study of that name."""
    if hasattr(study, "study_name"):
        return study
    path_arg(study, "study", "an optuna Study or the name of a stored study")
    from .searching.study import load_study, open_existing_storage

    return load_study(str(study), open_existing_storage(storage, Path(runs_dir)))


def load_arch_file(path: str | Path) -> UNetArch:
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
    text = [f"{k} {a} → {b}" for k, (a, b) in changes.items()]
    try:
        new = dataclasses.replace(arch, **{k: v for k, (_, v) in changes.items()})
    except ArchError as e:
        raise ArchError(f"the architecture cannot be adapted to the data ({', '.join(text)}): "
                        f"{e}") from None
    return new, text


@dataclass
class TrainPlan:
    """Everything a `train` run will do, known before its first step (what the CLI prints)."""

    arch: UNetArch
    data_cfg: Any
    cfg: Any
    train_data: Any
    val_data: Any
    out_dir: Path | None
    changes: list[str] = field(default_factory=list)
    """How the architecture was adapted to the data (in_channels, classes, ...)."""
    augment_note: str = ""
    """What the augmentation leaves out to keep labels meaningful (lateralised classes)."""
    origin: str = ""
    """Where the architecture came from: a file, a study's trial, or the default."""
    data_note: str = ""
    """Images of the data with NaN/inf values (`data.split.non_finite_note`), or empty."""


def plan_training(arch: UNetArch | str | Path | None = None, data: str | None = None, *,
                  from_study=None, trial: int | None = None, storage: str | None = None,
                  runs_dir: str | Path = "runs", epochs: int | None = None,
                  out_dir: str | Path | None = None, device: str | None = None,
                  train_options: dict | None = None, data_options: dict | None = None,
                  force: bool = False) -> TrainPlan:
    """Resolve a `train` call: the architecture (a UNetArch, a JSON file, a study's trial with
    `from_study`, or the default plain UNet), its data (decoded) and configurations, the output
    folder (claimed: refused before any work when it holds files nas-attn did not write)."""
    from pydantic import ValidationError

    if arch is not None and not isinstance(arch, UNetArch):
        path_arg(arch, "arch", "a UNetArch, the path of an architecture JSON file or None "
                  "(UNetArch.from_dict makes one from a dict)")
    path_arg(data, "data", "a data folder, 'builtin' or 'builtin3d'", optional=True)
    number_arg(epochs, "epochs", 1)
    number_arg(trial, "trial", 0)
    from .data import DataConfig, load_data, symmetry_plan
    from .paths import claim_output_dir, folder_name, inside
    from .training import TrainConfig
    from .training.config import format_errors

    opts, dopts, name = {}, {}, "model"
    if from_study is not None:
        if arch is not None:
            raise ArchError("give an architecture or a study to retrain from, not both")
        recipe = _recipe(from_study, trial, storage, runs_dir)
        arch, opts, dopts = recipe.arch, recipe.train_options, dict(recipe.data_options)
        name = f"{recipe.study}_trial{recipe.trial}"
        origin = f"trial {recipe.trial} of study {recipe.study!r}: {recipe.summary}"
    elif isinstance(arch, (str, Path)):
        name, origin = Path(arch).stem, str(arch)
        arch = load_arch_file(arch)
    elif arch is None:
        arch, origin = UNetArch(), "the default plain UNet"
    else:
        origin = "the given architecture"
    dopts.update(data_options or {})
    if data is not None:
        dopts["source"] = data
    try:
        data_cfg = DataConfig(**dopts)
    except ValidationError as e:
        raise DataError("invalid data options:\n" + format_errors(e)) from None
    opts = {**opts, **(train_options or {})}
    opts.update({k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None})
    cfg = TrainConfig.make(**opts)
    train_data, val_data = load_data(data_cfg)
    arch, changes = adapt_arch(arch, train_data)
    out = Path(out_dir) if out_dir is not None else \
        inside(Path(runs_dir) / "train", folder_name(name))  # name: stored text
    out = claim_output_dir(out, "train", force=force)  # before any training
    from .data.split import non_finite_note

    return TrainPlan(arch, data_cfg, cfg, train_data, val_data, out, changes,
                     symmetry_plan(train_data, data_cfg).note, origin,
                     non_finite_note(data_cfg) or "")


def _recipe(from_study, trial, storage, runs_dir):
    from .searching.finalize import retrain_recipe

    return retrain_recipe(open_study(from_study, storage, runs_dir), trial)


def run_plan(plan: TrainPlan, *, progress: Callable | None = None,
             on_epoch: Callable[[int, dict], None] | None = None,
             compile_model: bool = False) -> TrainResult:
    """Train as planned; writes best.pt, preview.png and metrics.json into the plan's folder."""
    from .training import train as train_loop
    from .training.checkpoint import write_json

    result = train_loop(plan.arch, plan.train_data, plan.val_data, plan.data_cfg, plan.cfg,
                        on_epoch=on_epoch, out_dir=plan.out_dir, progress=progress,
                        compile_model=compile_model)
    if result.best.get("cases"):  # the best epoch's 95 % interval over the validation cases
        from .stats.compare import estimate
        from .stats.counts import CaseCounts

        result.best["dice_ci"] = estimate([CaseCounts.from_dict(result.best["cases"])]).to_dict()
    if plan.out_dir is not None:
        write_json(plan.out_dir / "metrics.json", {
            "arch": plan.arch.to_dict(), "arch_summary": plan.arch.summary(),
            "best": result.best, "history": result.history,
            "images_per_s": result.images_per_s, "seconds": result.seconds,
            "steps": result.steps, "stop_reason": result.stop_reason,
            "device": result.runtime.describe(),
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "train_config": plan.cfg.model_dump(mode="json"),
            "data_config": plan.data_cfg.model_dump(mode="json"),
        })
    return result
