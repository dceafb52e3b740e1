"""The library entry points behind `import nas_attn as na`: search, finalize, train, export,
load_model, predict, evaluate.

Each is what the matching `nas-attn` command runs (the CLI only parses options and draws
progress); options are keyword-only, every function returns values and raises
`NasAttnError` subclasses with one-line messages.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .architecture.description import UNetArch
from .arguments import bool_arg, describe_value, number_arg, path_arg
from .errors import NasAttnError
from .planning import (  # noqa: F401  (public here: `nas-attn train` and tests use them)
    TrainPlan,
    adapt_arch,
    load_arch_file,
    open_study,
    plan_training,
    run_plan,
)

if TYPE_CHECKING:
    import optuna

    from .inference.trained import TrainedModel
    from .training import TrainResult


# ----- search -----------------------------------------------------------------------------------
def search(space: str | Path = "default", *, data: str | None = None,
           val_pattern: str | None = None, test_pattern: str | None = None,
           test_data: str | None = None, trials: int | None = None,
           timeout: float | None = None, study: str | None = None, storage: str | None = None,
           runs_dir: str | Path = "runs", device: str | None = None,
           sampler: str | None = None, pruner: str | None = None, seed: int | None = None,
           num_workers: int | None = None, strategy: str | None = None,
           force_data: bool = False, workers: int | None = None, gpus: str | None = None,
           per_gpu: int = 1, heartbeat_interval: int | None = None,
           grace_period: int | None = None, max_retry: int | None = None,
           listener=None) -> optuna.Study:
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
      storage always does); `heartbeat_interval`, `grace_period`, `max_retry`: how dead
      workers' trials are found and retried (RDB storages; defaults 30 s, 120 s, 2).
    - `listener`: gets `trial_started` / `epoch_done` / `trial_done` calls
      (`nas_attn.searching.objective.Listener`; trials in this process only).

    The options are those of `nas-attn search`, declared once in
    `nas_attn.searching.request` (`SearchRequest`, `RunOptions`) and checked by it here.
    """
    from .searching.heartbeat import set_heartbeat_env
    from .searching.opening import open_search
    from .searching.parallel import run_parallel, worker_slots
    from .searching.request import RunOptions, SearchRequest, check_args, search_options
    from .searching.run import run_search

    given = dict(locals())
    check_args(SearchRequest, given)
    check_args(RunOptions, given)
    req = SearchRequest(**{f.name: given[f.name] for f in search_options(SearchRequest)})
    req.runs_dir = Path(runs_dir)
    run = RunOptions(**{f.name: given[f.name] for f in search_options(RunOptions)})
    set_heartbeat_env(run.heartbeat_interval, run.grace_period, run.max_retry)
    slots = worker_slots(req, run.workers, run.gpus, run.per_gpu)
    if slots is not None:
        return run_parallel(req, slots)
    session = open_search(req, listener)
    return run_search(session, session.trials(req.trials), req.timeout)


def finalize(study, *, top: int = 3, seeds: int = 5, min_seeds: int = 2,
             budget: int | None = None, confirm_seeds: int = 3, epochs: int | None = None,
             storage: str | None = None, runs_dir: str | Path = "runs",
             device: str | None = None, test_data: str | None = None, data: str | None = None,
             baselines: bool = True, progress: Callable | None = None,
             on_epoch: Callable | None = None, on_round: Callable | None = None,
             on_step: Callable | None = None, seed_offset: int = 0,
             workers: int | None = None, gpus: str | None = None, per_gpu: int = 1
             ) -> dict[str, Any]:
    """Race a study's `top` trials, the baselines and the plain UNet at each one's size with
    the full budget (`epochs`, default the space's), as `nas-attn finalize` does: every
    entrant under `min_seeds` seeds, then one more seed per round for every survivor (at most
    `seeds`, at most `budget` full trainings, default 3 per entrant), an entrant significantly
    worse than the current best dropped after each round; then the champion (the best
    attention entrant), the plain UNet of its size and the Attention U-Net on
    `confirm_seeds` fresh seeds decide whether attention helps; test is scored for the report
    only.

    `study`: an `optuna.Study` or a study name in `storage` (default: SQLite in `runs_dir`).
    `test_data`: a separate test folder (default: the one the search recorded); `data`: the
    data folder's path when it moved. Returns the result (also `runs_dir/<study>/final/
    finalize.json`; the study's `finalize` attribute without per-case counts): `candidates`
    (val / test Dice per seed, 95 % intervals, per-case counts), `race` (its rounds),
    `confirmation`, `winner` (the champion), `attention_gain` (the verdict: helps / hurts / no
    detectable difference, with its interval, p-value and smallest detectable effect),
    `recommended`, Spearman / Kendall of the search's scores against the full-budget ones.

    `seed_offset` is added to every training seed (the same finalize on other seeds);
    `workers` / `gpus` (+ `per_gpu`) train in worker processes that split every round, as
    `--workers` / `--gpus` do."""
    from .searching.finalize import finalize as run_finalize

    number_arg(top, "top", 1, optional=False)
    number_arg(seeds, "seeds", 2, optional=False)
    number_arg(min_seeds, "min_seeds", 2, optional=False)
    number_arg(budget, "budget", 1)
    number_arg(confirm_seeds, "confirm_seeds", 0, optional=False)
    number_arg(epochs, "epochs", 1)
    number_arg(seed_offset, "seed_offset", 0, optional=False)
    number_arg(workers, "workers", 1)
    number_arg(per_gpu, "per_gpu", 1, optional=False)
    for key, value in (("storage", storage), ("device", device), ("test_data", test_data),
                       ("data", data), ("gpus", gpus)):
        path_arg(value, key, "a string", optional=True)
    path_arg(runs_dir, "runs_dir", "a folder path")
    bool_arg(baselines, "baselines")
    return run_finalize(open_study(study, storage, runs_dir), top=top, seeds=seeds,
                        min_seeds=min_seeds, budget=budget, confirm_seeds=confirm_seeds,
                        epochs=epochs, runs_dir=Path(runs_dir), device=device,
                        test_source=test_data, data=data, baselines=baselines,
                        progress=progress, on_epoch=on_epoch, on_round=on_round,
                        on_step=on_step, seed_offset=seed_offset, workers=workers, gpus=gpus,
                        per_gpu=per_gpu, storage=storage)


def noise(space: str | Path = "default", *, data: str | None = None,
          val_pattern: str | None = None, seeds: int = 3, epochs: int | None = None,
          confirm_seeds: int = 3, from_finalize=None, storage: str | None = None,
          runs_dir: str | Path = "runs", device: str | None = None,
          progress: Callable | None = None, on_start: Callable | None = None,
          on_step: Callable | None = None) -> dict[str, Any]:
    """The noise floor of a data set, as `nas-attn noise` measures it: the space's plain UNet
    trained under `seeds` seeds at the full budget (`epochs`, default finalize's) on `data`, or
    the plain UNet's runs of `from_finalize` (a study, or its name, with a finished finalize).

    Returns the summary (also stored as `runs_dir/noise/<signature>.json`, which the search,
    `show` and `finalize` on the same data quote): `scores` per seed, `run_sd` (their standard
    deviation), `score` (the mean with its 95 % interval over cases and seeds), `pair` (half
    the seeds against the other half: a comparison with no true difference),
    `detectable_at_finalize` (the smallest gain a comparison with `confirm_seeds` seeds per arm
    detects at 80 % power), `seeds_needed` for +0.005 and +0.010, and `path`."""
    from .searching.noise_check import from_finalize as read_finalize
    from .searching.noise_check import noise_check
    from .stats.noise import record_path

    number_arg(seeds, "seeds", 2, optional=False)
    number_arg(confirm_seeds, "confirm_seeds", 2, optional=False)
    number_arg(epochs, "epochs", 1)
    for key, value in (("data", data), ("val_pattern", val_pattern), ("storage", storage),
                       ("device", device)):
        path_arg(value, key, "a string", optional=True)
    path_arg(runs_dir, "runs_dir", "a folder path")
    if from_finalize is not None:
        rec = read_finalize(open_study(from_finalize, storage, runs_dir), Path(runs_dir))
    else:
        path_arg(space, "space", "a ready space name or the path of a YAML file")
        rec = noise_check(space, data=data, val_pattern=val_pattern, seeds=seeds,
                          epochs=epochs, runs_dir=Path(runs_dir), device=device,
                          progress=progress, on_start=on_start, on_step=on_step)
    return {**rec.summary(confirm_seeds), "data": rec.data, "arch": rec.arch,
            "epochs": rec.epochs, "source": rec.source,
            "path": str(record_path(runs_dir, rec.signature))}


# ----- train ------------------------------------------------------------------------------------
def train(arch: UNetArch | str | Path | None = None, data: str | None = None, *,
          from_study=None, trial: int | None = None, storage: str | None = None,
          runs_dir: str | Path = "runs", epochs: int | None = None,
          out_dir: str | Path | None = None, device: str | None = None,
          train_options: dict | None = None, data_options: dict | None = None,
          force: bool = False, progress: Callable | None = None,
          on_epoch: Callable[[int, dict], None] | None = None,
          compile_model: bool = False) -> TrainResult:
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
    from .inference.trained import TrainedModel

    path_arg(out_dir, "out_dir", "a folder path", optional=True)
    path_arg(runs_dir, "runs_dir", "a folder path")
    number_arg(trial, "trial", 0)
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
    path_arg(source, "source", "a TrainResult, a UNetArch, an optuna Study, or the path of a "
              "`nas-attn train` output or checkpoint")
    return export_checkpoint(source, out_dir, formats=tuple(formats), runs_dir=runs_dir,
                             force=force)[0]


def load_model(path: str | Path, device: str | None = None, *,
               accept_mismatch: bool = False) -> TrainedModel:
    """A trained model ready for inference: an export folder (arch.json + weights.pt; its
    model.py is never run), a checkpoint, or a `nas-attn train` folder; `.model` (eval mode),
    `.arch`, `.patch_size`, `.overlap`, `.spacing`. An export folder whose files differ from the
    hashes in its meta.json is refused (`ExportMismatchError`) unless `accept_mismatch=True`."""
    from .inference.prediction import load_model as _load

    path_arg(path, "path", "the path of an export folder, a checkpoint or a `nas-attn train` "
              "folder")
    path_arg(device, "device", "a device name (auto, cpu, cuda, cuda:N, mps)", optional=True)
    bool_arg(accept_mismatch, "accept_mismatch")
    return _load(path, device, accept_mismatch=accept_mismatch)


def _loaded(model, device: str | None, accept_mismatch: bool) -> TrainedModel:
    from .inference.trained import TrainedModel

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
    from .inference.prediction import InputError, check_out_dir, expand_inputs, predict_files

    raw = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    if not isinstance(raw, (list, tuple)) or not raw:
        raise NasAttnError(f"inputs must be a path or a non-empty list of paths, got "
                           f"{describe_value(inputs)}")
    for x in raw:
        path_arg(x, "inputs", "image file or folder paths")
    path_arg(out_dir, "out_dir", "a folder path")
    number_arg(batch, "batch", 1, optional=False)
    for key, value in (("tta", tta), ("force", force)):
        bool_arg(value, key)
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
    from .inference.evaluation import evaluate_folder

    path_arg(data, "data", "a dataset folder")
    number_arg(batch, "batch", 1, optional=False)
    for key, value in (("tta", tta), ("hd95", hd95)):
        bool_arg(value, key)
    return evaluate_folder(_loaded(model, device, accept_mismatch), data, tta=tta, hd95=hd95,
                           batch=batch)
