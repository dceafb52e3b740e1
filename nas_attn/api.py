"""The library entry points behind `import nas_attn as na`: search, finalize, train, export,
load_model, predict, evaluate.

Each is what the matching `nas-attn` command runs (the CLI only parses options and draws
progress); options are keyword-only, every function returns values and raises
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

    from .trained import TrainedModel
    from .training import TrainResult


# ----- argument checks: the command line's rules, with the package's errors ---------------------
def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _path_arg(value: Any, name: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise NasAttnError(f"{name} must be {what}, got {_describe(value)}")


def _bool_arg(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise NasAttnError(f"{name} must be True or False, got {_describe(value)}")


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
def search(space: str | Path = "default", *, data: str | None = None, trials: int | None = None,
           timeout: float | None = None, study: str | None = None, storage: str | None = None,
           runs_dir: str | Path = "runs", strategy: str | None = None,
           sampler: str | None = None, pruner: str | None = None, seed: int | None = None,
           device: str | None = None, val_pattern: str | None = None,
           test_pattern: str | None = None, test_data: str | None = None,
           num_workers: int | None = None, force_data: bool = False,
           workers: int | None = None, gpus: str | None = None, per_gpu: int = 1,
           listener=None) -> "optuna.Study":
    """Run (or resume) a search, as `nas-attn search` does, and return its optuna study.

    - `space`: a ready space name (`nas-attn spaces`) or a YAML file.
    - `data`: a folder, `builtin` or `builtin3d` (default: the space's `data.source`);
      `val_pattern` / `test_pattern`: globs on sample names for the validation / test split;
      `test_data`: a separate test folder, recorded for `finalize`.
    - `trials` (default: the space's `search.trials`; one-shot: new placements to score,
      default `search.oneshot.trials`), `timeout` in seconds.
    - `study`: its name (default: the space's name, a running number added); a study of that
      name in `storage` is resumed. `storage`: an optuna storage URL or `journal:FILE`
      (default: SQLite in `runs_dir`). `force_data`: resume on other data than the study's.
    - `strategy`: `trials` (train every candidate) or `oneshot` (one supernet); `sampler`,
      `pruner`, `seed`: override the space's.
    - `device`: auto, cpu, cuda, cuda:N or mps; `num_workers`: data-loader workers.
    - `workers` / `gpus` (+ `per_gpu`): run trials in worker processes, as `--workers` /
      `--gpus` do, with the same storage rules (`nas_attn.searching.parallel`; a journal
      storage always does).
    - `listener`: gets `trial_started` / `epoch_done` / `trial_done` calls
      (`nas_attn.searching.objective.Listener`; trials in this process only).
    """
    from .searching.parallel import run_parallel, worker_slots
    from .searching.opening import SearchRequest, open_search
    from .searching.run import run_search

    _path_arg(space, "space", "a ready space name or the path of a YAML file")
    _number_arg(trials, "trials", 1)
    _number_arg(timeout, "timeout", 1, integer=False)
    for key, value in (("data", data), ("study", study), ("storage", storage),
                       ("runs_dir", runs_dir), ("device", device), ("sampler", sampler),
                       ("pruner", pruner), ("val_pattern", val_pattern),
                       ("test_pattern", test_pattern), ("test_data", test_data),
                       ("strategy", strategy)):
        _path_arg(value, key, "a string", optional=key != "runs_dir")
    _number_arg(seed, "seed", 0)
    _number_arg(num_workers, "num_workers", 0)
    _number_arg(workers, "workers", 1)
    _number_arg(per_gpu, "per_gpu", 1)
    _bool_arg(force_data, "force_data")
    _path_arg(gpus, "gpus", "a string such as '0,1' or 'all'", optional=True)
    req = SearchRequest(space=space, data=data, val_pattern=val_pattern,
                        test_pattern=test_pattern, test_data=test_data, trials=trials,
                        timeout=timeout, study=study, storage=storage, runs_dir=Path(runs_dir),
                        device=device, sampler=sampler, pruner=pruner, seed=seed,
                        num_workers=num_workers, strategy=strategy, force_data=force_data)
    slots = worker_slots(req, workers, gpus, per_gpu)
    if slots is not None:
        return run_parallel(req, slots)
    session = open_search(req, listener)
    return run_search(session, session.trials(req.trials), req.timeout)


def finalize(study, *, top: int = 3, seeds: int = 3, epochs: int | None = None,
             storage: str | None = None, runs_dir: str | Path = "runs",
             device: str | None = None, test_data: str | None = None, data: str | None = None,
             baselines: bool = True, progress: Callable | None = None,
             on_epoch: Callable | None = None) -> dict[str, Any]:
    """Retrain a study's `top` trials, the baselines and the plain UNet at the winner's size
    from scratch with the full budget (`epochs`, default the space's) under `seeds` seeds,
    choose the winner on validation and score on test, as `nas-attn finalize` does.

    `study`: an `optuna.Study` or a study name in `storage` (default: SQLite in `runs_dir`).
    `test_data`: a separate test folder (default: the one the search recorded); `data`: the
    data folder's path when it moved. Returns the result stored as the study's `finalize`
    attribute: `candidates` (val / test Dice per seed), `winner`, `attention_gain` (the paired
    gain over the same-size plain UNet and its verdict), Spearman / Kendall of the search's
    scores against the full-budget ones."""
    from .searching.finalize import finalize as run_finalize

    _number_arg(top, "top", 1, optional=False)
    _number_arg(seeds, "seeds", 1, optional=False)
    _number_arg(epochs, "epochs", 1)
    for key, value in (("storage", storage), ("device", device), ("test_data", test_data),
                       ("data", data)):
        _path_arg(value, key, "a string", optional=True)
    _path_arg(runs_dir, "runs_dir", "a folder path")
    _bool_arg(baselines, "baselines")
    return run_finalize(_open_study(study, storage, runs_dir), top=top, seeds=seeds,
                        epochs=epochs, runs_dir=Path(runs_dir), device=device,
                        test_source=test_data, data=data, baselines=baselines,
                        progress=progress, on_epoch=on_epoch)


def _open_study(study, storage: str | None, runs_dir: str | Path) -> "optuna.Study":
    """`study` itself when it is one, else the stored study of that name."""
    if hasattr(study, "study_name"):
        return study
    _path_arg(study, "study", "an optuna Study or the name of a stored study")
    from .searching.study import load_study, open_existing_storage

    return load_study(str(study), open_existing_storage(storage, Path(runs_dir)))


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
    return TrainPlan(arch, data_cfg, cfg, train_data, val_data, out, changes,
                     symmetry_plan(train_data, data_cfg).note, origin)


def _recipe(from_study, trial, storage, runs_dir):
    from .searching.finalize import retrain_recipe

    return retrain_recipe(_open_study(from_study, storage, runs_dir), trial)


def run_plan(plan: TrainPlan, *, progress: Callable | None = None,
             on_epoch: Callable[[int, dict], None] | None = None,
             compile_model: bool = False) -> "TrainResult":
    """Train as planned; writes best.pt, preview.png and metrics.json into the plan's folder."""
    from .training import train as train_loop
    from .training.checkpoint import write_json

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
          from_study=None, trial: int | None = None, storage: str | None = None,
          runs_dir: str | Path = "runs", epochs: int | None = None,
          out_dir: str | Path | None = None, device: str | None = None,
          train_options: dict | None = None, data_options: dict | None = None,
          force: bool = False, progress: Callable | None = None,
          on_epoch: Callable[[int, dict], None] | None = None,
          compile_model: bool = False) -> "TrainResult":
    """Train one architecture with the full budget and write best.pt, preview.png and
    metrics.json, as `nas-attn train` does; returns the `TrainResult` (best weights loaded in
    `result.model`).

    - `arch`: a `UNetArch`, an architecture JSON file, or None (the plain UNet); or
      `from_study` (an `optuna.Study` or a study name in `storage` / `runs_dir`) with `trial`
      (default: its best or finalize winner) to retrain a trial with its recipe.
    - `data`: a folder, `builtin` or `builtin3d` (default: the study's data with
      `from_study`, else `builtin`); `data_options`: fields of `DataConfig`.
    - `epochs`, `device`, `train_options` (fields of `TrainConfig`) override the recipe.
    - `out_dir` (default `runs_dir/train/<name>`): refused when it holds files nas-attn did not
      write, unless `force`.
    - `progress` / `on_epoch`: callbacks of the training loop; `compile_model`: torch.compile.
    """
    plan = plan_training(arch, data, from_study=from_study, trial=trial, storage=storage,
                         runs_dir=runs_dir, epochs=epochs, out_dir=out_dir, device=device,
                         train_options=train_options, data_options=data_options, force=force)
    return run_plan(plan, progress=progress, on_epoch=on_epoch, compile_model=compile_model)


# ----- export and inference ---------------------------------------------------------------------
def export(source, out_dir: str | Path | None = None, *, trial: int | None = None,
           weights=None, meta: dict | None = None, inference=None,
           formats: tuple[str, ...] = (), storage: str | None = None,
           runs_dir: str | Path = "runs", force: bool = False) -> dict[str, Path]:
    """Write a standalone model.py (torch only) with arch.json, meta.json and weights.pt.

    `source`: a `TrainedModel` (`na.load_model`) or the `TrainResult` of `na.train` (its best
    weights, with the patch size and intensity normalisation it was trained with), a
    `UNetArch` (with optional `weights`, a state_dict or its file, `meta`, and `inference`: an
    `InferenceConfig` or its dict, e.g. `TrainResult.inference`; without it model.py
    normalises each image by its own percentiles and predicts in one pass), an `optuna.Study`
    (its best trial, the finalize winner, or `trial`), or the path of a `nas-attn train`
    output / checkpoint. `formats`: also "onnx" and/or "torchscript". Returns the paths
    written by kind ("model", "arch", "meta", "weights", ...)."""
    from .exporting import export_arch, export_checkpoint, export_trained
    from .trained import TrainedModel

    _path_arg(out_dir, "out_dir", "a folder path", optional=True)
    _path_arg(runs_dir, "runs_dir", "a folder path")
    _number_arg(trial, "trial", 0)
    runs_dir = Path(runs_dir)
    if callable(getattr(source, "trained", None)):  # a TrainResult
        source = source.trained()
    if isinstance(source, TrainedModel):
        out = Path(out_dir) if out_dir is not None else runs_dir / "export" / "model"
        return export_trained(source, out, meta=meta, formats=tuple(formats), force=force)
    if isinstance(source, UNetArch):
        out = Path(out_dir) if out_dir is not None else runs_dir / "export" / "model"
        return export_arch(source, out, weights=weights, meta=meta, formats=tuple(formats),
                           inference=inference, force=force)
    if hasattr(source, "study_name"):
        from .searching.trial_export import export_trial

        return export_trial(source, trial, out_dir, formats=tuple(formats), runs_dir=runs_dir,
                            force=force)[0]
    _path_arg(source, "source", "a TrainResult, a UNetArch, an optuna Study, or the path of a "
              "`nas-attn train` output or checkpoint")
    return export_checkpoint(source, out_dir, formats=tuple(formats), runs_dir=runs_dir,
                             force=force)[0]


def load_model(path: str | Path, device: str | None = None, *,
               accept_mismatch: bool = False) -> "TrainedModel":
    """A trained model ready for inference: an export folder (arch.json + weights.pt; its
    model.py is never run), a checkpoint, or a `nas-attn train` folder; `.model` (eval mode),
    `.arch`, `.patch_size`, `.overlap`, `.spacing`. An export folder whose files differ from the
    hashes in its meta.json is refused (`ExportMismatchError`) unless `accept_mismatch=True`."""
    from .prediction import load_model as _load

    _path_arg(path, "path", "the path of an export folder, a checkpoint or a `nas-attn train` "
              "folder")
    _path_arg(device, "device", "a device name (auto, cpu, cuda, cuda:N, mps)", optional=True)
    _bool_arg(accept_mismatch, "accept_mismatch")
    return _load(path, device, accept_mismatch=accept_mismatch)


def _loaded(model, device: str | None, accept_mismatch: bool) -> "TrainedModel":
    from .trained import TrainedModel

    if isinstance(model, TrainedModel):
        return model
    return load_model(model, device, accept_mismatch=accept_mismatch)


def predict(model, inputs: str | Path | list[str | Path], out_dir: str | Path, *,
            tta: bool = False, force: bool = False, device: str | None = None, batch: int = 4,
            accept_mismatch: bool = False) -> list:
    """Segment images and write one mask each into `out_dir` (same name, the input's format
    and affine for NIfTI), as `nas-attn predict` does; returns one `PredictOutcome` per image
    (`output`, or `error` for an image that failed: the others still run).

    `model`: a `load_model` result or a path for it; `inputs`: image files and/or folders
    (a dataset folder's `images/`). A missing input, or an `out_dir` that would overwrite an
    input or a data set's masks, raises `InputError` before anything is written; an existing
    mask is kept unless `force`. `tta`: average over flips; `batch`: sliding-window patches per
    forward pass."""
    from .prediction import InputError, check_out_dir, expand_inputs, predict_files

    raw = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    if not isinstance(raw, (list, tuple)) or not raw:
        raise NasAttnError(f"inputs must be a path or a non-empty list of paths, got "
                           f"{_describe(inputs)}")
    for x in raw:
        _path_arg(x, "inputs", "image file or folder paths")
    _path_arg(out_dir, "out_dir", "a folder path")
    _number_arg(batch, "batch", 1, optional=False)
    for key, value in (("tta", tta), ("force", force)):
        _bool_arg(value, key)
    files, problems = expand_inputs(list(raw))
    if problems:
        raise InputError(problems[0] + (f" (and {len(problems) - 1} more)"
                                        if len(problems) > 1 else ""))
    check_out_dir(files, Path(out_dir), list(raw))
    loaded = _loaded(model, device, accept_mismatch)
    return list(predict_files(loaded, files, Path(out_dir), tta=tta, force=force, batch=batch))


def evaluate(model, data: str | Path, *, tta: bool = False, hd95: bool = True,
             device: str | None = None, batch: int = 4,
             accept_mismatch: bool = False) -> dict[str, Any]:
    """Score a trained model on a labelled dataset folder (images/, masks/ [, aux/]), as
    `nas-attn evaluate` does: `dice` and `iou` pooled per class over the folder (the search's
    metric), per class and per image, and `hd95` (mm where the files give the spacing).
    `model`: a `load_model` result or a path for it."""
    from .evaluation import evaluate_folder

    _path_arg(data, "data", "a dataset folder")
    _number_arg(batch, "batch", 1, optional=False)
    for key, value in (("tta", tta), ("hd95", hd95)):
        _bool_arg(value, key)
    return evaluate_folder(_loaded(model, device, accept_mismatch), data, tta=tta, hd95=hd95,
                           batch=batch)
