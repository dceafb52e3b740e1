"""Inference on whole images, torch only: the training normalisation, sliding-window prediction,
flip test-time augmentation, probabilities or a label map.

Torch only (no numpy), like all of `nas_attn.models`, because the exporter copies these
functions into `model.py`, so the exported file predicts with the very code that
`nas-attn predict`, `nas-attn evaluate` and training validation use:

- `normalise_image` is the training normalisation, in torch, for every mode
  (`NORMALISATIONS`; training's `nas_attn.data.intensity` calls this same function):
  `dataset`: per channel, the same linear map for every image, fitted on the training
  images by `nas_attn.data.intensity` (the lowest per-image 0.5th percentile -> 0, the highest
  per-image 99.5th -> 1), clipped, the two values recorded in the settings (`low`, `high`;
  `aux_low`, `aux_high` for the auxiliary modality); `image`:
  `normalise_percentile`, per image and channel between the image's own percentiles (min/max
  when those coincide; a constant channel becomes 0); `none`: the values as they are.
  NaN/inf read as the lowest value (0 for `none`); in float64, so 1e300 scales instead of
  overflowing. Percentiles use numpy's default rule (linear interpolation between order
  statistics), found with `torch.kthvalue` (no size limit, unlike `torch.quantile`).
- `predict_logits` runs the model once on an image no larger than the training patch, else
  `sliding_window_predict` (sliding.py) at the patch size (overlap, Gaussian weights), which
  is what validation during training does (`nas_attn.training.validation.predict_logits`). With
  `tta=True` it also predicts the image flipped along every combination of spatial axes and
  averages the probabilities (4 passes in 2D, 8 in 3D). Flip TTA assumes a flipped image keeps
  its labels' meaning: do not use it when classes are lateralised (left vs right structures).
- `labels_from_output` turns logits (or averaged probabilities) into a label map: argmax over
  classes, or `> 0` (sigmoid > 0.5) for a single-channel binary model.
- `preprocess_image` / `predict_image` are model.py's `preprocess` / `predict`, given the
  file's ARCH and INFERENCE: one image in, labels or probabilities out.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from .sliding import forward_logits, sliding_window_predict

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
DEFAULT_OVERLAP = 0.25
NORMALISATIONS = ("dataset", "image", "none")
"""How raw intensities become the model's input (`normalise_image`)."""


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
    with no finite value raises ValueError. The one implementation: training's `image`
    normalisation (`nas_attn.data.readers.normalise`, through `normalise_image`) calls it too."""
    x = torch.as_tensor(image)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for c in range(x.shape[0]):
        ch = x[c].to(torch.float64)
        lo, hi = percentile_range(ch, low, high, c)
        out[c] = scale_channel(ch, lo, hi)
    return out


def percentile_range(ch: torch.Tensor, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE,
                     c: int = 0) -> tuple[float, float]:
    """(lo, hi) of one channel as `normalise_percentile` scales it: its `low` and `high`
    percentiles of the finite values, min/max where those coincide; (0, 0) for an empty one.
    ValueError when no value is finite."""
    if ch.numel() == 0:
        return 0.0, 0.0
    ch = ch.to(torch.float64)
    finite = torch.isfinite(ch)
    if not bool(finite.all()):
        if not bool(finite.any()):
            raise ValueError(f"channel {c} holds no finite value")
        flat = ch[finite]
    else:
        flat = ch.reshape(-1)
    lo, hi = _percentile(flat, low), _percentile(flat, high)
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return lo, hi


def scale_channel(ch: torch.Tensor, lo: float, hi: float, finite: bool = False) -> torch.Tensor:
    """One channel (float64) linearly from [lo, hi] to [0, 1], clipped; NaN/inf read as `lo`
    (`finite`: the caller knows there are none); all 0 when hi <= lo. The one formula of the
    `image` and `dataset` normalisations, so a patch scaled with its whole image's range equals
    the patch of the scaled image."""
    if hi <= lo:
        return torch.zeros(ch.shape, dtype=torch.float32, device=ch.device)
    if not finite:
        ch = torch.where(torch.isfinite(ch), ch, torch.full((), lo, dtype=ch.dtype,
                                                             device=ch.device))
    return ((ch - lo) / (hi - lo)).clamp_(0.0, 1.0).float()


def normalise_image(image, settings, role: str = "image") -> torch.Tensor:
    """(C, *spatial) raw intensities -> float32 (C, *spatial) model input, as in training.

    `settings`: a mapping with `normalisation` (one of `NORMALISATIONS`; the older name
    `percentile` means `image`) and, for `dataset`, per-channel `low` / `high` (`aux_low` /
    `aux_high` when `role` is "aux"); `image` reads `low_percentile` / `high_percentile`."""
    mode = settings.get("normalisation", "image")
    low_p = float(settings.get("low_percentile", LOW_PERCENTILE))
    high_p = float(settings.get("high_percentile", HIGH_PERCENTILE))
    if mode in ("image", "percentile"):
        return normalise_percentile(image, low_p, high_p)
    x = torch.as_tensor(image)
    if mode == "none":
        x = x.to(torch.float64)
        return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype)).float()
    if mode != "dataset":
        raise ValueError(f"unknown normalisation {mode!r}; accepted: {', '.join(NORMALISATIONS)}")
    prefix = "aux_" if role == "aux" else ""
    lows, highs = settings[prefix + "low"], settings[prefix + "high"]
    if x.shape[0] != len(lows) or len(highs) != len(lows):
        raise ValueError(f"{x.shape[0]} channels, but the training normalisation has "
                         f"{len(lows)} (low) and {len(highs)} (high) values")
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for c in range(x.shape[0]):
        out[c] = scale_channel(x[c].to(torch.float64), float(lows[c]), float(highs[c]))
    return out


def _logits_once(model, image: torch.Tensor, aux: torch.Tensor | None, patch_size,
                 overlap: float, batch: int) -> torch.Tensor:
    if patch_size is not None:  # the training patch shape only: smaller padded, larger tiled
        return sliding_window_predict(model, image, patch_size, overlap=overlap, aux=aux,
                                      batch=batch)
    return forward_logits(model, image, aux)


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


def preprocess_image(image, spatial_dims: int, channels: int | None = None,
                     settings=None, role: str = "image") -> torch.Tensor:
    """One raw image, (C, *spatial) or (*spatial) for one channel (tensor or array), to the
    training normalisation `settings` (see `normalise_image`; default: per image):
    float32 (C, *spatial)."""
    x = torch.as_tensor(image)
    if x.dim() == spatial_dims:
        x = x[None]
    if x.dim() != spatial_dims + 1:
        raise ValueError(f"expected a (C, *spatial) image with {spatial_dims} spatial axes, got "
                         f"shape {tuple(x.shape)}")
    if channels is not None and x.shape[0] != channels:
        raise ValueError(f"expected {channels} channels first, got shape {tuple(x.shape)}")
    return normalise_image(x, settings or {}, role)


def predict_image(image, model, arch, inference, *, aux=None, tta: bool = False,
                  output: str = "labels", normalise: bool = True, overlap=None, batch: int = 4):
    """model.py's `predict`: `arch` and `inference` are its ARCH and INFERENCE mappings
    (spatial_dims, in_channels, aux_channels; patch_size, overlap, the normalisation)."""
    if output not in ("labels", "probabilities", "logits"):
        raise ValueError(f"output must be 'labels', 'probabilities' or 'logits', not {output!r}")
    if output == "logits" and tta:
        raise ValueError("output='logits' cannot be averaged over flips; use 'probabilities'")
    dims = arch["spatial_dims"]
    device = next(model.parameters()).device
    x = preprocess_image(image, dims, arch["in_channels"], inference) if normalise else \
        torch.as_tensor(image).float()
    a = None
    if arch["aux_channels"]:
        if aux is None:
            raise ValueError(f"this model also takes an auxiliary image "
                             f"({arch['aux_channels']} channels): predict(image, model, aux=...)")
        a = preprocess_image(aux, dims, arch["aux_channels"], inference, "aux") if normalise \
            else torch.as_tensor(aux).float()
        a = a[None].to(device)
    x = x[None].to(device)
    if x.shape[1] != arch["in_channels"] or x.dim() != dims + 2:
        raise ValueError(f"expected ({arch['in_channels']}, *spatial) with {dims} spatial axes, "
                         f"got {tuple(x.shape[1:])}")
    out, is_probs = predict_logits(
        model, x, patch_size=inference["patch_size"], aux=a, tta=tta, batch=batch,
        overlap=inference["overlap"] if overlap is None else overlap)
    if output == "labels":
        return labels_from_output(out, is_probs)[0]
    if output == "probabilities" and not is_probs:
        out = to_probabilities(out)
    return out[0]
