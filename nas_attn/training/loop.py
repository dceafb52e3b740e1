"""`train(...)`: one candidate, trained and evaluated; the function every trial calls.

Library code: prints nothing. Per-step progress goes to an optional `progress(StepInfo)`
callback, per-evaluation metrics to `on_epoch(epoch, metrics)` (which may raise, e.g.
`optuna.TrialPruned`: the exception propagates after accelerator memory is released).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..device import Runtime, is_oom, release_memory, seed_everything
from ..errors import DivergedError, OutOfMemoryError, TrainingError
from ..inference.trained import InferenceConfig, TrainedModel
from .checkpoint import save_checkpoint, state_dict_cpu
from .config import TrainConfig
from .loader_cache import cfg_key, get_loaders
from .losses import SegLoss
from .optim import LRSchedule, make_optimizer
from .resume import load_resume, save_resume
from .validation import eval_patch, evaluate


# ----- progress / result ------------------------------------------------------------------
@dataclass(frozen=True)
class StepInfo:
    """What `progress` receives every few optimizer steps (every step on CPU)."""

    epoch: int             # 1-based
    epochs: int
    step: int              # 1-based, within the epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int       # planned (a time budget may end the run earlier)
    loss: float            # mean loss over the steps since the last report
    lr: float
    images_per_s: float    # training throughput so far (data wait included)
    elapsed_s: float


@dataclass
class TrainResult:
    arch: Any
    model: nn.Module
    """Best weights loaded (the EMA weights when `ema` is on), eval mode, on the run's device."""
    best: dict[str, Any]
    """Metrics of the best evaluation (by mean foreground Dice), with its `epoch`."""
    history: list[dict[str, Any]]
    """One dict per epoch: epoch, train_loss, lr, time, epoch_s, images_per_s; evaluated epochs
    also have val_loss, dice, iou, dice_per_class, iou_per_class (hd95 when on)."""
    checkpoint: Path | None
    images_per_s: float
    seconds: float
    steps: int
    stop_reason: str
    """"epochs", "time" (max_time_s reached) or "patience"."""
    runtime: Runtime
    data_wait_s: float = 0.0
    """Seconds the training steps spent waiting for the train loader."""
    train_s: float = 0.0
    """Seconds spent in training steps (data wait included, evaluation excluded)."""
    config: dict[str, Any] = field(default_factory=dict)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    """How inference must see images to match training (what best.pt records)."""

    def trained(self) -> TrainedModel:
        """The best weights as the package's one trained-model type (what `na.export` writes)."""
        return TrainedModel(self.arch, self.model, self.inference, source=str(
            self.checkpoint or ""), kind="trained", provenance={
                "score_dice": self.best.get("dice"), "epoch": self.best.get("epoch"),
                "train_config": self.config})


NONFINITE_PATIENCE = 5
"""With float16 AMP the gradient scaler skips steps whose gradients overflow; training counts as
diverged only after this many consecutive non-finite losses (bf16 / fp32: the first one)."""

ProgressFn = Callable[[StepInfo], None]
EpochFn = Callable[[int, dict], None]


# ----- training ---------------------------------------------------------------------------
def _cycle(loader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise TrainingError("the training loader yielded no batches (no training samples?)")


def train(arch, train_data, val_data, data_cfg, cfg: TrainConfig | None = None, *,
          on_epoch: EpochFn | None = None, out_dir: str | Path | None = None,
          progress: ProgressFn | None = None, loaders: tuple | None = None,
          runtime: Runtime | None = None, preview: bool = True,
          compile_model: bool = False, resume_from: str | Path | None = None,
          model: nn.Module | None = None, keep_resume: bool = False) -> TrainResult:
    """Train `build_unet(arch)` (or `model`, a module of `arch`'s inputs and outputs such as
    the one-shot supernet) on `train_data`, evaluate on `val_data` after every
    `cfg.val_every` epochs (and at the end), keep the best by mean foreground Dice.

    `loaders` (train, val) overrides `make_loaders` (default: memoised, see `get_loaders`);
    `runtime` overrides the one built from `cfg.device/amp/channels_last`. With `out_dir`, the
    best checkpoint is written (atomically) to `out_dir/best.pt` at every improvement, and at
    the end (`preview=True`) `out_dir/preview.png` shows the best model on validation images.
    `compile_model=True` runs the training forward through `torch.compile` (worth it for a long
    run of one model; evaluation stays eager, whole images vary in size).

    With `out_dir`, `out_dir/resume.pt` also holds the full training state (model, optimizer,
    schedule, EMA, epoch, best so far) after every epoch; `resume_from` (such a file, e.g. of a
    run that died) continues that run from the epoch after the saved one. It is removed when the
    run ends, fails or is interrupted, except after an interrupt (SIGINT, SIGTERM) with
    `keep_resume` (the one-shot supernet: hours of work a launch resumes) and when the process
    is killed outright.

    Raises `DivergedError` (NaN/inf loss), `OutOfMemoryError` (accelerator or host memory), and
    whatever `on_epoch` raises.
    """
    cfg = cfg or TrainConfig()
    if runtime is None:
        runtime = Runtime.create(cfg.device, amp=cfg.amp, channels_last=cfg.channels_last,
                                 spatial_dims=arch.spatial_dims)
    resume_file = Path(out_dir) / "resume.pt" if out_dir is not None else None
    try:
        result = _train(arch, train_data, val_data, data_cfg, cfg, runtime=runtime,
                        on_epoch=on_epoch, out_dir=out_dir, progress=progress, loaders=loaders,
                        compile_model=compile_model, resume_from=resume_from, model=model)
        if out_dir is not None and preview:
            from .preview import save_preview

            save_preview(result.model, val_data, Path(out_dir) / "preview.png", runtime,
                         patch_size=eval_patch(data_cfg, train_data), overlap=cfg.val_overlap)
        if resume_file is not None:
            resume_file.unlink(missing_ok=True)
        return result
    except BaseException as e:  # noqa: BLE001  (cleanup, then re-raise)
        _drop_resume(e, resume_file, keep_resume)
        if not is_oom(e):
            if runtime.device.type != "cpu":
                release_memory(e, runtime)
            raise
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        release_memory(e, runtime)
    raise OutOfMemoryError(
        f"out of memory on {runtime.device} while training {arch.summary()} with batch_size "
        f"{cfg.batch_size}: {msg}. Try a smaller batch_size, patch size or widths"
        + (", or turn AMP on" if runtime.is_cuda and not runtime.amp else "") + ".")


def _drop_resume(e: BaseException, resume_file: Path | None, keep_resume: bool) -> None:
    """A run that ended with `e` leaves no resume state, unless it was interrupted by a signal
    and `keep_resume` (the signal is acknowledged: it is on its way up)."""
    stopped = isinstance(e, KeyboardInterrupt)
    if stopped:
        from ..interrupts import acknowledge

        acknowledge()
    if resume_file is not None and not (stopped and keep_resume):
        resume_file.unlink(missing_ok=True)


@dataclass
class _Run:
    """The moving parts of one training run, shared by its epochs."""

    arch: Any
    cfg: TrainConfig
    data_cfg: Any
    runtime: Runtime
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: Any
    criterion: SegLoss
    ema: Any
    forward: Callable
    val_loader: Any
    batches: Iterator
    steps_per_epoch: int
    total_steps: int
    patch_size: Any
    t_start: float
    ckpt_path: Path | None
    resume_path: Path | None
    nonfinite_limit: int
    report_every: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    written: Path | None = None
    global_step: int = 0
    images: int = 0
    train_done_s: float = 0.0
    wait_s: float = 0.0
    since_best: int = 0
    nonfinite_run: int = 0
    inference: InferenceConfig | None = None
    """How inference must see images to match this training (recorded with the checkpoint):
    the patch, the normalisation of the training images, their common voxel spacing."""

    def checkpoint_meta(self, epoch) -> dict[str, Any]:
        """What best.pt records besides the weights: scores, configs, and what inference needs
        to see images as training did (patch size, normalisation)."""
        return {"metrics": self.best, "epoch": epoch,
                "train_config": self.cfg.model_dump(mode="json"),
                "data_config": cfg_key(self.data_cfg),
                "inference": self.inference.to_dict() if self.inference else None}


def _setup(arch, train_data, val_data, data_cfg, cfg: TrainConfig, runtime: Runtime, out_dir,
           loaders, compile_model: bool, model: nn.Module | None = None) -> _Run:
    from ..architecture.builder import build_unet

    t_start = time.perf_counter()
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    if loaders is None:
        loaders = get_loaders(train_data, val_data, data_cfg, batch_size=cfg.batch_size,
                              seed=cfg.seed, device_is_cuda=runtime.is_cuda,
                              samples_per_epoch=cfg.resolved_samples_per_epoch(len(train_data)))
    train_loader, val_loader = loaders
    steps_per_epoch = cfg.steps_per_epoch or len(train_loader)
    if steps_per_epoch < 1:
        raise TrainingError("the training loader is empty: no training samples, or batch_size "
                            f"{cfg.batch_size} larger than the samples with drop_last")
    total_steps = cfg.epochs * steps_per_epoch
    patch_size = eval_patch(data_cfg, train_data)

    if model is None:  # an architecture that cannot fit: one line before any allocation
        runtime.check_fits(arch, patch_size or max((tuple(x.shape[1:]) for x in
                                                    train_data.images), key=math.prod),
                           cfg.batch_size)
    model = runtime.prepare_model(build_unet(arch) if model is None else model)
    model.train()
    optimizer = make_optimizer(model, cfg, runtime)
    schedule = LRSchedule(optimizer, cfg, total_steps=total_steps,
                          warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)))
    scaler = runtime.scaler()
    criterion = SegLoss(arch.out_channels, dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight,
                        ds_weight=cfg.ds_weight)
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=3 / 4)
    deep = bool(arch.deep_supervision)
    forward = model.forward_all if deep else model
    if compile_model:
        forward = runtime.compile(forward)
    nonfinite_limit = NONFINITE_PATIENCE if scaler.is_enabled() else 1
    report_every = 1 if runtime.device.type == "cpu" else 10
    return _Run(arch, cfg, data_cfg, runtime, model, optimizer, schedule, scaler, criterion, ema,
                forward, val_loader, _cycle(train_loader), steps_per_epoch, total_steps,
                patch_size, t_start, Path(out_dir) / "best.pt" if out_dir is not None else None,
                Path(out_dir) / "resume.pt" if out_dir is not None else None, nonfinite_limit,
                report_every,
                inference=InferenceConfig.of_training(train_data, patch_size, cfg.val_overlap))


def _check_finite(run: _Run, values: torch.Tensor, pending: int, lr: float) -> torch.Tensor:
    """The finite ones among the last `pending` losses; `DivergedError` once the non-finite
    run reaches its limit."""
    finite = torch.isfinite(values)
    for j, ok in enumerate(finite.tolist()):
        run.nonfinite_run = 0 if ok else run.nonfinite_run + 1
        if run.nonfinite_run >= run.nonfinite_limit:
            first = run.global_step - pending + 2 + j - run.nonfinite_run
            persisted = (f" and stayed non-finite for {run.nonfinite_run} steps (the "
                         f"gradient scaler skipped them)" if run.nonfinite_run > 1 else "")
            ep = (first - 1) // run.steps_per_epoch + 1
            raise DivergedError(
                f"loss became {float(values[j])} at epoch {ep}, step "
                f"{first - (ep - 1) * run.steps_per_epoch} (global step {first}, lr "
                f"{lr:.3g}){persisted} for {run.arch.summary()}; lower lr (now "
                f"{run.cfg.lr:g}), keep grad_clip on (now {run.cfg.grad_clip}), or turn AMP off")
    return finite


def _train_epoch(run: _Run, epoch: int, progress: ProgressFn | None) -> dict[str, Any]:
    """One epoch of optimizer steps; its record (the losses, throughput, time budget)."""
    cfg, optimizer, scaler = run.cfg, run.optimizer, run.scaler
    run.model.train()
    t_epoch = time.perf_counter()
    epoch_loss_sum, epoch_steps, epoch_images = 0.0, 0, 0
    pending: list[torch.Tensor] = []
    out_of_time = False
    for step in range(1, run.steps_per_epoch + 1):
        t0 = time.perf_counter()
        batch = next(run.batches)
        t1 = time.perf_counter()
        run.wait_s += t1 - t0
        batch = run.runtime.to_device(batch)
        x, y = batch["image"], batch["mask"]
        aux = batch.get("aux")
        with run.runtime.autocast():
            outs = run.forward(x, aux)
        loss = run.criterion(outs, y)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        run.global_step += 1
        epoch_images += x.shape[0]
        pending.append(loss.detach())
        if run.ema is not None:
            run.ema.update(run.model, step=run.global_step)
        elapsed = time.perf_counter() - run.t_start
        lr = run.schedule.lr
        run.schedule.update(run.global_step, elapsed)
        out_of_time = cfg.max_time_s is not None and elapsed >= cfg.max_time_s
        if len(pending) >= run.report_every or step == run.steps_per_epoch or out_of_time:
            values = torch.stack(pending).float().cpu()  # one sync per report
            finite = _check_finite(run, values, len(pending), lr)
            epoch_loss_sum += float(values[finite].sum())  # skipped steps do not count
            epoch_steps += int(finite.sum())
            pending.clear()
            if progress is not None:
                busy = run.train_done_s + time.perf_counter() - t_epoch
                progress(StepInfo(epoch=epoch, epochs=cfg.epochs, step=step,
                                  steps_per_epoch=run.steps_per_epoch,
                                  global_step=run.global_step, total_steps=run.total_steps,
                                  loss=float(values[finite].mean()) if finite.any()
                                  else float("nan"), lr=lr,
                                  images_per_s=(run.images + epoch_images) / max(1e-9, busy),
                                  elapsed_s=elapsed))
        if out_of_time:
            break
    epoch_train_s = time.perf_counter() - t_epoch
    run.train_done_s += epoch_train_s
    run.images += epoch_images
    return {"epoch": epoch, "train_loss": epoch_loss_sum / max(1, epoch_steps),
            "lr": run.schedule.lr, "epoch_s": epoch_train_s,
            "images_per_s": epoch_images / max(1e-9, epoch_train_s), "_out_of_time": out_of_time}


def _evaluate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Validation scores; a better Dice becomes the best state (and best.pt)."""
    cfg = run.cfg
    eval_model = run.ema.module if run.ema is not None else run.model
    metrics = evaluate(eval_model, run.val_loader, run.runtime, classes=run.arch.classes,
                       patch_size=run.patch_size, overlap=cfg.val_overlap, hd95=cfg.hd95,
                       criterion=run.criterion.base)
    cases = metrics.pop("cases", None)  # per-case counts: kept for the best epoch only
    if not run.best or metrics["dice"] > run.best["dice"]:
        run.best = {"epoch": epoch, **metrics, "cases": cases}
        run.best_state = state_dict_cpu(eval_model)
        run.since_best = 0
        if run.ckpt_path is not None:
            run.written = save_checkpoint(run.ckpt_path, run.arch, run.best_state,
                                          run.checkpoint_meta(epoch))
    else:
        run.since_best += 1
    return metrics


def _train(arch, train_data, val_data, data_cfg, cfg: TrainConfig, *, runtime: Runtime,
           on_epoch, out_dir, progress, loaders, compile_model: bool = False,
           resume_from=None, model=None) -> TrainResult:
    run = _setup(arch, train_data, val_data, data_cfg, cfg, runtime, out_dir, loaders,
                 compile_model, model)
    first_epoch, stop_reason = 1, "epochs"
    if resume_from is not None:
        first_epoch, run.global_step, run.since_best, run.best, run.best_state, run.history, \
            elapsed = load_resume(resume_from, run.model, run.optimizer, run.schedule,
                                   run.scaler, run.ema)
        run.t_start -= elapsed
        if run.best_state is not None and run.ckpt_path is not None:
            run.written = save_checkpoint(run.ckpt_path, arch, run.best_state,
                                          run.checkpoint_meta(run.best.get("epoch")))

    for epoch in range(first_epoch, cfg.epochs + 1):
        record = _train_epoch(run, epoch, progress)
        out_of_time = record.pop("_out_of_time")
        last = epoch == cfg.epochs or out_of_time
        if epoch % cfg.val_every == 0 or last:
            record.update(_evaluate_epoch(run, epoch))
        record["time"] = time.perf_counter() - run.t_start
        run.history.append(record)
        if run.resume_path is not None:
            save_resume(run.resume_path, epoch, run.global_step, run.since_best, run.best,
                         run.best_state, run.history, record["time"], run.model, run.optimizer,
                         run.schedule, run.scaler, run.ema)
        if "dice" in record and on_epoch is not None:
            on_epoch(epoch, dict(record))
        if out_of_time:
            stop_reason = "time"
            break
        if cfg.patience is not None and run.since_best >= cfg.patience:
            stop_reason = "patience"
            break

    final = run.ema.module if run.ema is not None else run.model
    if run.best_state is not None:
        final.load_state_dict(run.best_state)
    final.eval()
    seconds = time.perf_counter() - run.t_start
    return TrainResult(
        arch=arch, model=final, best=run.best, history=run.history, checkpoint=run.written,
        images_per_s=run.images / max(1e-9, run.train_done_s), seconds=seconds,
        steps=run.global_step, stop_reason=stop_reason, runtime=runtime, data_wait_s=run.wait_s,
        train_s=run.train_done_s, config=cfg.model_dump(mode="json"),
        inference=run.inference)
