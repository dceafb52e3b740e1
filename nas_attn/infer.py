"""Inference on whole images, torch only: the training normalisation, sliding-window prediction,
flip test-time augmentation, probabilities or a label map.

Torch only (no numpy, no nas_attn imports but the sliding window) because the exporter copies
these functions into `model.py`, so the exported file predicts with the very code that
`nas-attn predict`, `nas-attn evaluate` and training validation use:

- `normalise_percentile` is `nas_attn.data.readers.normalise` in torch (per image and channel,
  the 0.5th percentile maps to 0 and the 99.5th to 1, clipped; min/max when those coincide; a
  constant channel becomes 0; NaN/inf read as the lowest value; in float64). Training's
  decoding calls this same function. Percentiles use numpy's default rule (linear
  interpolation between order statistics), found with `torch.kthvalue` (no size limit, unlike
  `torch.quantile`).
- `predict_logits` runs the model once on an image no larger than the training patch, else
  `nas_attn.data.sliding_window_predict` at the patch size (overlap, Gaussian weights), which
  is what validation during training does (`nas_attn.train.loop.predict_logits`). With
  `tta=True` it also predicts the image flipped along every combination of spatial axes and
  averages the probabilities (4 passes in 2D, 8 in 3D). Flip TTA assumes a flipped image keeps
  its labels' meaning: do not use it when classes are lateralised (left vs right structures).
- `labels_from_output` turns logits (or averaged probabilities) into a label map: argmax over
  classes, or `> 0` (sigmoid > 0.5) for a single-channel binary model.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from .data.sliding import sliding_window_predict

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
DEFAULT_OVERLAP = 0.25


def _percentile(values: torch.Tensor, q: float) -> float:
    """The q-th percentile (0..100) of a flat float tensor, numpy's default 'linear' method."""
    n = values.numel()
    pos = (q / 100.0) * (n - 1)
    lo_i = math.floor(pos)
    hi_i = min(lo_i + 1, n - 1)
    t = pos - lo_i
    a = float(torch.kthvalue(values, lo_i + 1).values)
    b = a if hi_i == lo_i else float(torch.kthvalue(values, hi_i + 1).values)
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def normalise_percentile(image, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
                         ) -> torch.Tensor:
    """(C, *spatial) image -> float32 (C, *spatial) in [0, 1], per channel between its `low`
    and `high` percentiles of the finite values (min/max where those coincide; a constant
    channel becomes 0). Computed in float64, so data far beyond float32's range (1e300) scales
    instead of overflowing; NaN/inf pixels read as the channel's lowest value (0). A channel
    with no finite value raises ValueError. The one implementation: training's decoding
    (`nas_attn.data.readers.normalise`) calls it too."""
    x = torch.as_tensor(image)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for c in range(x.shape[0]):
        ch = x[c].to(torch.float64)
        finite = torch.isfinite(ch)
        if ch.numel() == 0:
            out[c] = 0.0
            continue
        if not bool(finite.all()):
            if not bool(finite.any()):
                raise ValueError(f"channel {c} holds no finite value")
            flat = ch[finite]
        else:
            flat = ch.reshape(-1)
        lo, hi = _percentile(flat, low), _percentile(flat, high)
        if hi <= lo:
            lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            out[c] = 0.0
            continue
        ch = torch.where(finite, ch, torch.full((), lo, dtype=ch.dtype, device=ch.device))
        out[c] = ((ch - lo) / (hi - lo)).clamp_(0.0, 1.0)
    return out


def _forward(model, x: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
    out = model(x) if aux is None else model(x, aux)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out


def _logits_once(model, image: torch.Tensor, aux: torch.Tensor | None, patch_size,
                 overlap: float, batch: int) -> torch.Tensor:
    spatial = tuple(image.shape[2:])
    patch = None
    if patch_size is not None:
        patch = [int(patch_size)] * len(spatial) if isinstance(patch_size, int) else \
            [int(p) for p in patch_size]
        if len(patch) == 1:
            patch = patch * len(spatial)
    if patch is not None:  # the training patch shape only: smaller images padded, larger tiled
        return sliding_window_predict(model, image, patch, overlap=overlap, aux=aux, batch=batch)
    return _forward(model, image, aux)


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, *sp) logits -> probabilities: sigmoid for one channel, else softmax over K."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def labels_from_output(out: torch.Tensor, probabilities: bool = False) -> torch.Tensor:
    """(B, K, *sp) logits (or probabilities) -> (B, *sp) int64 labels."""
    if out.shape[1] == 1:
        return (out[:, 0] > (0.5 if probabilities else 0.0)).long()
    return out.argmax(dim=1)


def predict_logits(model, image: torch.Tensor, *, patch_size=None,
                   overlap: float = DEFAULT_OVERLAP, aux: torch.Tensor | None = None,
                   tta: bool = False, batch: int = 4) -> tuple[torch.Tensor, bool]:
    """Model output for a preprocessed (B, C, *spatial) batch: `(out, is_probabilities)`.

    Without TTA `out` is float32 logits; with `tta=True` it is the probabilities averaged over
    every flip combination of the spatial axes. A sliding window at `patch_size` is used where
    the image is larger than the patch on some axis (the model must be in eval mode).
    """
    with torch.no_grad():
        if not tta:
            return _logits_once(model, image, aux, patch_size, overlap, batch).float(), False
        dims = list(range(2, image.dim()))
        total = None
        count = 0
        for mask in product((False, True), repeat=len(dims)):
            axes = [d for d, m in zip(dims, mask) if m]
            x = image.flip(axes) if axes else image
            a = None if aux is None else (aux.flip(axes) if axes else aux)
            y = to_probabilities(_logits_once(model, x, a, patch_size, overlap, batch).float())
            y = y.flip(axes) if axes else y
            total = y if total is None else total + y
            count += 1
        return total / count, True
