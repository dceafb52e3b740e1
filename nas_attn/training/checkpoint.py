"""Writing checkpoints: plain tensors + the architecture JSON + metrics, safe for
`weights_only=True` (reading them: `nas_attn.inference.checkpoint`).

Layout (a dict): `format` (int), `arch` (UNetArch JSON string), `state_dict` (name -> CPU
tensor), `meta` (plain JSON-like values: metrics, epoch, train config ...). Writing is atomic:
the file is written to a temporary name in the same folder, flushed, then renamed over the
target, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..atomic import atomic_file, atomic_write
from ..inference.checkpoint import CHECKPOINT_FORMAT, CheckpointError  # noqa: F401


def plain_values(value: Any) -> Any:
    """Make metric values safe for `weights_only` loading (JSON-like builtins only)."""
    if isinstance(value, Mapping):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the model's state."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary file in the target's folder, then rename it into place."""
    with atomic_file(path) as f:  # a file object: a full disk raises OSError (DiskFullError)
        torch.save(obj, f)
    return Path(path)


def save_checkpoint(path: str | os.PathLike, arch, state_dict: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; `state_dict` may come from `state_dict_cpu`."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch.to_json(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "meta": plain_values(dict(meta or {})),
    }
    return atomic_torch_save(obj, path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (same temp-then-rename rule as checkpoints)."""
    return atomic_write(path, json.dumps(plain_values(data), indent=2, allow_nan=True) + "\n")
