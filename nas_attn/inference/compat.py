"""Reading what older versions of nas-attn wrote: the one place for it.

REMOVAL: these paths go in nas-attn 0.4. Until then, every reader of a checkpoint's inference
settings or of a resumed study's normalisation goes through here, so the rest of the package
knows only today's shapes (`nas_attn.inference.trained.InferenceConfig`).

- Checkpoints before 0.2 recorded `patch_size`, `normalisation` and `spacing` beside each other
  (today: one "inference" entry); older still recorded no patch size (recovered from the data
  configuration, which may mean decoding the training data again) and no normalisation (each
  image scaled by its own percentiles).
- Studies whose trials ran before the normalisation was recorded keep that normalisation for
  their new trials, so that all are ranked alike (`pin_old_normalisation`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data import DataConfig
from ..models.infer import DEFAULT_OVERLAP
from .trained import InferenceConfig, broadcast_patch

REMOVAL_VERSION = "0.4"


def checkpoint_inference(ckpt: Path, arch, meta: dict) -> tuple[InferenceConfig, list[str]]:
    """How inference must see images for a checkpoint, and notes. Today's checkpoints hold it
    whole (meta["inference"]); older ones are read as the module docstring says (a
    `metrics.json` beside the checkpoint, written by `nas-attn train`, is read as well)."""
    if isinstance(meta.get("inference"), dict):
        return InferenceConfig.make(meta["inference"], arch.spatial_dims), []
    notes: list[str] = []
    overlap = float((meta.get("train_config") or {}).get("val_overlap", DEFAULT_OVERLAP))
    norm = dict(meta.get("normalisation") or {"normalisation": "image"})
    patch = meta.get("patch_size") or None  # validated and broadcast by InferenceConfig.make
    if patch is None:
        data_config = meta.get("data_config")
        side = ckpt.parent / "metrics.json"
        if side.is_file():
            try:
                data_config = json.loads(side.read_text()).get("data_config") or data_config
            except (OSError, ValueError):
                pass
        if data_config:
            try:
                patch = _patch_from_data_config(data_config, arch.spatial_dims)
            except Exception as e:  # noqa: BLE001  (the training data may be gone)
                notes.append(f"the training patch size could not be recovered ({e}); "
                             "every image is predicted in one pass")
        else:
            notes.append("the checkpoint does not record its patch size; every image is "
                         "predicted in one pass")
    settings = {**norm, "patch_size": patch, "overlap": overlap, "spacing": meta.get("spacing")}
    return InferenceConfig.make(settings, arch.spatial_dims), notes


def _patch_from_data_config(data_config: Any, spatial_dims: int) -> tuple[int, ...] | None:
    """The training patch size a checkpoint without `patch_size` used: its data config's
    patch_size, else the smallest training image (the data package's rule; loads the data)."""
    from ..data import load_data
    from ..data.loaders import resolve_patch

    dc = json.loads(data_config) if isinstance(data_config, str) else dict(data_config or {})
    if dc.get("patch_size"):
        return broadcast_patch(dc["patch_size"], spatial_dims)
    train, _ = load_data(DataConfig(**dc))
    return tuple(resolve_patch(None, train))


def pin_old_normalisation(study, data_cfg: DataConfig
                          ) -> tuple[DataConfig, str | None]:
    """A study whose trials ran before the intensity normalisation was recorded (their
    `data_config` has no "normalisation") scaled each image by its own percentiles: its new
    trials do the same, so that they are ranked against the old ones on equal terms."""
    def trained_before(attrs) -> bool:  # (a trial pruned by a constraint never trained)
        if "data_config" in attrs:
            return "normalisation" not in attrs["data_config"]
        return "dice" in attrs or "curve" in attrs  # older still: no data_config at all

    old = [t.number for t in study.get_trials(deepcopy=False)
           if t.state.is_finished() and trained_before(t.user_attrs)]
    if not old or data_cfg.normalisation == "image":
        return data_cfg, None
    return data_cfg.model_copy(update={"normalisation": "image"}), (
        f"study {study.study_name!r}: trial(s) {', '.join(map(str, old[:5]))}"
        f"{' ...' if len(old) > 5 else ''} ran before the intensity normalisation was recorded "
        "(each image scaled by its own percentiles); new trials use the same (normalisation: "
        "image) so that all are ranked alike")
