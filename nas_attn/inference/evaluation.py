"""Score a trained model on a labelled folder: the pooled Dice of `nas_attn.training.metrics` (the
score the search optimises), IoU, HD95 per class, and per-image Dice.

The folder is decoded like a training folder (same readers; a 3D folder through the
preprocessed cache, `nas_attn.data.cache.open_folder`, each case on its own grid), its
images normalised with the settings the model was trained with, and every sample is predicted like validation during training
(`nas_attn.models.infer.predict_logits`: one pass, or a sliding window beyond the training patch), so a
`nas-attn train` checkpoint evaluated on its own validation images gives its validation Dice.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .prediction import predict_array
from .trained import TrainedModel
from .metrics import MetricAccumulator


def _clean(v: Any) -> Any:
    """NaN -> None for JSON."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def intervals(cases) -> dict[str, Any]:
    """95 % intervals of the pooled Dice and of each class's, over the cases (a bootstrap over
    the folder's images or volumes: one trained model, so training noise is not counted)."""
    from ..stats.compare import estimate, per_class

    return {"dice_ci": estimate([cases]).to_dict(),
            "dice_per_class_ci": [None if e is None else [e.low, e.high]
                                  for e in per_class([cases])],
            "interval": "95 %, bootstrap over the cases (one model: training noise not "
                        "counted)"}


def evaluate_folder(loaded: TrainedModel, folder: str | Path, *, tta: bool = False,
                    hd95: bool = True, batch: int = 4,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Scores of `loaded` on every sample of a dataset folder (images/, masks/ [, aux/]), each
    on its own grid (resampled to the model's spacing for the model and back). A 3D folder is
    read through the preprocessed cache (`nas_attn.data.cache`, not resampled), so one case is
    in memory at a time.

    Returns `dice`, `iou` (pooled per class over the folder, mean over classes present),
    `dice_per_class`, `iou_per_class`, `hd95`, `hd95_per_class` (mm where the files give the
    voxel spacing, else pixels: `hd95_unit`), `dice_per_image`,
    `images`, `classes`, `class_names`, `per_image` ({name, dice per class}), `cases` (the
    per-case TP / FP / FN counts, `nas_attn.stats.counts.CaseCounts` as JSON, from which the
    pooled Dice of any subset is recomputed exactly), `dice_ci` and `dice_per_class_ci` (95 %
    intervals over the cases).
    """
    from ..data.cache import open_folder

    arch = loaded.arch
    data = open_folder(Path(folder), arch.spatial_dims, resample=False)  # 3D: one case at a time
    if data.in_channels != arch.in_channels:
        raise DataError(f"{folder}: images have {data.in_channels} channels, the model takes "
                        f"{arch.in_channels}")
    if bool(arch.aux_channels) != (data.aux is not None) or \
            (arch.aux_channels and data.aux_channels != arch.aux_channels):
        raise DataError(f"{folder}: aux/ has {data.aux_channels} channels, the model takes "
                        f"{arch.aux_channels} (an aux/ folder is needed exactly when it takes any)")
    if data.classes > arch.classes:
        raise DataError(f"{folder}: masks hold class ids up to {data.classes - 1}, the model "
                        f"predicts {arch.classes} classes (0..{arch.classes - 1})")
    acc = MetricAccumulator(arch.classes, with_hd95=hd95)
    rows = []
    for i in range(len(data)):
        spacing = None if data.spacings is None else data.spacings[i]
        # raw values, normalised as in training (resampled to the model's spacing and back)
        pred = predict_array(loaded, data.images[i], aux=None if data.aux is None else
                             data.aux[i], spacing=spacing, tta=tta, batch=batch)
        per_class = acc.add(pred, np.asarray(data.masks[i]), spacing)
        rows.append({"name": data.names[i], "dice_per_class": _clean(per_class)})
        if progress is not None:
            progress(i + 1, len(data), data.names[i])
    res = acc.result()
    res.update(intervals(acc.case_counts()))
    names = list(data.class_names or [])
    names = names + [f"class {k}" for k in range(len(names), arch.classes)]
    res.update({"classes": arch.classes, "class_names": names, "per_image": rows,
                "data": str(folder), "model": loaded.source, "tta": tta,
                "patch_size": list(loaded.patch_size) if loaded.patch_size else None,
                "normalisation": loaded.normalisation["normalisation"],
                "metric": "Dice per class pooled over the folder (nas_attn.training.metrics)"})
    return _clean(res)
