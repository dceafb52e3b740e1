"""Validation during training: whole images (sliding window past the training patch), the
pooled per-class Dice of `metrics`, retried on the CPU for an image the accelerator cannot hold."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..device import Runtime, is_oom, release_memory
from ..models import infer
from ..inference.metrics import MetricAccumulator, labels_from_logits


def eval_patch(data_cfg, train_data):
    """The training patch size (the data package's rule), used to decide on sliding windows."""
    patch = getattr(data_cfg, "patch_size", None)
    try:
        from ..data.loaders import resolve_patch

        return resolve_patch(patch, train_data)
    except Exception:  # noqa: BLE001  (no data package rule / odd data: fall back to the config)
        return patch


def predict_logits(model: nn.Module, image: torch.Tensor, runtime: Runtime, *, patch_size=None,
                   overlap: float = 0.25, aux: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 logits (1, C, *sp) of one whole image (1, C_in, *sp) on the device, under the
    run's autocast: `nas_attn.models.infer.predict_logits`, what predict and model.py run (at
    the training patch only, so cuDNN never tunes for a new shape)."""
    with runtime.autocast():
        return infer.predict_logits(model, image, patch_size=patch_size, overlap=overlap,
                                    aux=aux)[0]


def _predict_or_cpu(model: nn.Module, image: torch.Tensor, runtime: Runtime, **kw) -> torch.Tensor:
    """`predict_logits`, retried on the CPU for this one image when the accelerator runs out of
    memory, so an OOM at evaluation does not throw away a trial that finished training."""
    try:
        return predict_logits(model, image, runtime, **kw)
    except BaseException as e:  # noqa: BLE001  (only OOM is handled)
        if not is_oom(e) or runtime.device.type == "cpu":
            raise
        release_memory(e, runtime)
    cpu = Runtime.create("cpu", amp=False, channels_last=False, spatial_dims=image.dim() - 2)
    aux = kw.pop("aux", None)
    model.to("cpu")
    try:
        return predict_logits(model, image.cpu(), cpu, aux=None if aux is None else aux.cpu(), **kw)
    finally:
        model.to(runtime.device)


@torch.no_grad()
def evaluate(model: nn.Module, val_loader, runtime: Runtime, *, classes: int, patch_size=None,
             overlap: float = 0.25, hd95: bool = False,
             criterion: nn.Module | None = None) -> dict[str, Any]:
    """Scores over whole validation images (`metrics`: per-class Dice pooled over the split,
    with the per-case counts under `cases`, named by the samples' names), plus the mean
    `val_loss` per image when a criterion is given. One host sync per image (the confusion
    counts); the model is left in eval mode."""
    model.eval()
    acc = MetricAccumulator(classes, with_hd95=hd95)
    names = _case_names(val_loader)
    loss_sum = None
    for batch in val_loader:
        spacing = batch.pop("spacing", None)  # stays on the host: (B, dims) mm
        batch = runtime.to_device(batch)
        image, mask = batch["image"], batch["mask"]
        logits = _predict_or_cpu(model, image, runtime, patch_size=patch_size, overlap=overlap,
                                 aux=batch.get("aux"))
        mask = mask.to(logits.device)
        if criterion is not None:
            loss = criterion(logits, mask).detach()
            loss_sum = loss if loss_sum is None else loss_sum + loss.to(loss_sum.device)
        for j, (pred, gt) in enumerate(zip(labels_from_logits(logits), mask)):
            acc.add(pred, gt, None if spacing is None else spacing[j].tolist(),
                    name=names[len(acc)] if names and len(acc) < len(names) else None)
    out: dict[str, Any] = acc.result()
    if loss_sum is not None:
        out["val_loss"] = float(loss_sum) / max(1, len(acc))
    return out


def _case_names(loader) -> list[str] | None:
    """The samples' names of an unshuffled loader over whole images (`WholeImageDataset`), in
    the order it yields them; None when the dataset does not say."""
    data = getattr(getattr(loader, "dataset", None), "data", None)
    names = getattr(data, "names", None)
    sampler = getattr(loader, "sampler", None)
    if names is None or type(sampler).__name__ != "SequentialSampler":
        return None
    return [str(n) for n in names]
