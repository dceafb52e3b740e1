"""The library entry points behind `import nas_attn as na`: search, train, export, load_model.

Each is what the matching `nas-attn` command runs (the CLI only parses options and draws
progress); everything is keyword-only past the first argument, returns values and raises
`NasAttnError` subclasses with one-line messages.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .arch import UNetArch
from .errors import ArchError, DataError, NasAttnError

if TYPE_CHECKING:
    import optuna

    from .predict import LoadedModel
    from .train import TrainResult


# ----- argument checks: the command line's rules, with the package's errors ---------------------
def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _path_arg(value: Any, name: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise NasAttnError(f"{name} must be {what}, got {_describe(value)}")


def _number_arg(value: Any, name: str, low: float, *, integer: bool = True,
                optional: bool = True) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        kind = "an integer" if integer else "a number"
        raise NasAttnError(f"{name} must be {kind} >= {low:g}" + (" or None" if optional else "")
                           + f", got {_describe(value)}")


# ----- search -----------------------------------------------------------------------------------
def search(space: str | Path = "default", *, trials: int | None = None,
           timeout: float | None = None, listener=None, workers: int | None = None,
           gpus: str | None = None, per_gpu: int = 1, **request: Any) -> "optuna.Study":
    """Run (or resume) a search and return its study. `space`: a ready space name or a YAML
    file; `trials` defaults to the space's `search.trials`; `request` takes the other fields of
    `nas_attn.search.run.SearchRequest` (data, study, storage, runs_dir, device, sampler,
    pruner, seed, val_pattern, test_pattern, test_data, num_workers). `listener` gets
    `trial_started` / `epoch_done` / `trial_done` calls (see `search.run.Listener`; in this
    process only). `workers` / `gpus` (+ `per_gpu`) run the trials in worker processes as
    `nas-attn search --workers/--gpus` does, with the same storage rules
    (`nas_attn.search.parallel`; a journal storage always does)."""
    from .search.parallel import run_parallel, worker_slots
    from .search.run import SearchRequest, open_search, run_search

    _path_arg(space, "space", "a ready space name or the path of a YAML file")
    _number_arg(trials, "trials", 1)
    _number_arg(timeout, "timeout", 1, integer=False)
    accepted = {f.name for f in dataclasses.fields(SearchRequest)} - {"space", "trials",
                                                                      "timeout", "notes"}
    unknown = sorted(set(request) - accepted)
    if unknown:
        raise NasAttnError(f"search() got unknown option(s) {', '.join(unknown)}; accepted: "
                           f"{', '.join(sorted(accepted))}")
    for key in ("data", "study", "storage", "runs_dir", "device", "sampler", "pruner",
                "val_pattern", "test_pattern", "test_data", "strategy"):
        _path_arg(request.get(key), key, "a string", optional=True)
    for key in ("seed", "num_workers"):
        _number_arg(request.get(key), key, 0)
    _number_arg(workers, "workers", 1)
    _number_arg(per_gpu, "per_gpu", 1)
    _path_arg(gpus, "gpus", "a string such as '0,1' or 'all'", optional=True)
    req = SearchRequest(space=space, trials=trials, timeout=timeout, **request)
    slots = worker_slots(req, workers, gpus, per_gpu)
    if slots is not None:
        return run_parallel(req, slots)
    session = open_search(req, listener)
    return run_search(session, session.trials(req.trials), req.timeout)


# ----- train ------------------------------------------------------------------------------------
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
        _path_arg(arch, "arch", "a UNetArch, the path of an architecture JSON file or None "
                  "(UNetArch.from_dict makes one from a dict)")
    _path_arg(data, "data", "a data folder, 'builtin' or 'builtin3d'", optional=True)
    _number_arg(epochs, "epochs", 1)
    _number_arg(trial, "trial", 0)
    from .data import DataConfig, load_data, symmetry_plan
    from .paths import claim_output_dir, folder_name, inside
    from .train import TrainConfig
    from .train.config import format_errors

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
    return TrainPlan(arch, data_cfg, cfg, train_data, val_data, out, changes,
                     symmetry_plan(train_data, data_cfg).note, origin)


def _recipe(from_study, trial, storage, runs_dir):
    from .search.finalize import retrain_recipe
    from .search.study import load_study, open_existing_storage

    study = from_study if hasattr(from_study, "study_name") else \
        load_study(str(from_study), open_existing_storage(storage, Path(runs_dir)))
    return retrain_recipe(study, trial)


def run_plan(plan: TrainPlan, *, progress: Callable | None = None,
             on_epoch: Callable[[int, dict], None] | None = None,
             compile_model: bool = False) -> "TrainResult":
    """Train as planned; writes best.pt, preview.png and metrics.json into the plan's folder."""
    from .train import train as train_loop
    from .train.checkpoint import write_json

    result = train_loop(plan.arch, plan.train_data, plan.val_data, plan.data_cfg, plan.cfg,
                        on_epoch=on_epoch, out_dir=plan.out_dir, progress=progress,
                        compile_model=compile_model)
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


def train(arch: UNetArch | str | Path | None = None, data: str | None = None, *,
          progress: Callable | None = None, on_epoch: Callable[[int, dict], None] | None = None,
          compile_model: bool = False, **plan: Any) -> "TrainResult":
    """Train one architecture with a full budget and write its outputs (see `plan_training` for
    the arguments: `from_study`/`trial`, `epochs`, `out_dir`, `device`, `train_options`,
    `data_options`, `force`, `storage`, `runs_dir`). `data`: a folder, `builtin` or `builtin3d`
    (default: the study's data with `from_study`, else `builtin`). Returns the `TrainResult`
    (best weights loaded in `result.model`)."""
    return run_plan(plan_training(arch, data, **plan), progress=progress, on_epoch=on_epoch,
                    compile_model=compile_model)


# ----- export and inference ---------------------------------------------------------------------
def export(source, out_dir: str | Path | None = None, *, trial: int | None = None,
           weights=None, meta: dict | None = None, inference: dict | None = None,
           formats: tuple[str, ...] = (), storage: str | None = None,
           runs_dir: str | Path = "runs", force: bool = False) -> dict[str, Path]:
    """Write a standalone model.py (torch only) with arch.json, meta.json and weights.pt.

    `source`: the `TrainResult` of `na.train` (its best weights, with the patch size and
    intensity normalisation it was trained with), a `UNetArch` (with optional `weights`, a
    state_dict or its file, `meta`, and `inference`: {"patch_size", "overlap",
    "normalisation"} as training used them, e.g. `TrainResult.inference`; without it model.py
    normalises each image by its own percentiles and predicts in one pass), an `optuna.Study`
    (its best trial, the finalize winner, or `trial`), or the path of a `nas-attn train`
    output / checkpoint. `formats`: also "onnx" and/or "torchscript". Returns the paths
    written by kind ("model", "arch", "meta", "weights", ...)."""
    from .export import export_arch, export_checkpoint

    _path_arg(out_dir, "out_dir", "a folder path", optional=True)
    _path_arg(runs_dir, "runs_dir", "a folder path")
    _number_arg(trial, "trial", 0)
    runs_dir = Path(runs_dir)
    if hasattr(source, "inference") and hasattr(source, "model") and hasattr(source, "arch"):
        out = Path(out_dir) if out_dir is not None else runs_dir / "export" / "model"
        best = getattr(source, "best", {}) or {}
        info = {"score_dice": best.get("dice"), "epoch": best.get("epoch"),
                "score_metric": "validation Dice per class, pooled over the split",
                **(meta or {})}
        return export_arch(source.arch, out, weights=source.model.state_dict(), meta=info,
                           formats=tuple(formats), inference=source.inference, force=force)
    if isinstance(source, UNetArch):
        out = Path(out_dir) if out_dir is not None else runs_dir / "export" / "model"
        return export_arch(source, out, weights=weights, meta=meta, formats=tuple(formats),
                           inference=inference, force=force)
    if hasattr(source, "study_name"):
        from .search.trial_export import export_trial

        return export_trial(source, trial, out_dir, formats=tuple(formats), runs_dir=runs_dir,
                            force=force)[0]
    _path_arg(source, "source", "a TrainResult, a UNetArch, an optuna Study, or the path of a "
              "`nas-attn train` output or checkpoint")
    return export_checkpoint(source, out_dir, formats=tuple(formats), runs_dir=runs_dir,
                             force=force)[0]


def load_model(path: str | Path, device: str | None = None, *,
               accept_mismatch: bool = False) -> "LoadedModel":
    """A trained model ready for inference: an export folder (model.py + weights.pt), a
    checkpoint, or a `nas-attn train` folder; `.model` (eval mode), `.arch`, `.patch_size`.
    An export folder whose files differ from the hashes in its meta.json is refused
    (`ExportMismatchError`) unless `accept_mismatch=True`."""
    from .predict import load_model as _load

    _path_arg(path, "path", "the path of an export folder, a checkpoint or a `nas-attn train` "
              "folder")
    _path_arg(device, "device", "a device name (auto, cpu, cuda, cuda:N, mps)", optional=True)
    if not isinstance(accept_mismatch, bool):
        raise NasAttnError(f"accept_mismatch must be True or False, got {accept_mismatch!r}")
    return _load(path, device, accept_mismatch=accept_mismatch)
