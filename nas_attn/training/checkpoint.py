"""Checkpoints: plain tensors + the architecture JSON + metrics, safe for `weights_only=True`.

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
from ..errors import TrainingError

CHECKPOINT_FORMAT = 1


class CheckpointError(TrainingError):
    """A checkpoint file that is missing, unreadable or not a nas-attn checkpoint."""


def _plain(value: Any) -> Any:
    """Make metric values safe for `weights_only` loading (JSON-like builtins only)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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
        "meta": _plain(dict(meta or {})),
    }
    return atomic_torch_save(obj, path)


def safe_load(path: str | os.PathLike, what: str = "weights file"):
    """`torch.load(path, weights_only=True)` onto the CPU, or `CheckpointError` naming the file
    and what is wrong with it in one line (never torch's advice to load with
    `weights_only=False`, which would run any code the file holds)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        import errno

        if e.errno == errno.EINVAL and path.is_file() and os.access(path, os.R_OK):
            # torch's zip reader on a cut-off file: the file reads, its contents do not
            raise CheckpointError(f"{path}: not a readable {what} ({path.stat().st_size:,} "
                                  "bytes; it is truncated, damaged or not a PyTorch file)"
                                  ) from None
        raise CheckpointError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001  (zip, pickle and EOF errors of many kinds)
        text = str(e)
        if "Unsupported global" in text:
            why = ("it holds Python objects besides tensors, which are not loaded (they could "
                   "run code)")
        elif "Weights only load failed" in text or "central directory" in text \
                or "EOF" in text or "truncated" in text.lower() or isinstance(e, EOFError):
            why = "it is truncated, damaged or not a PyTorch file"
        else:
            why = f"{type(e).__name__}: {text.splitlines()[0][:160] if text else ''}"
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: not a readable {what} ({size:,} bytes; {why})") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (validated), loaded with `weights_only=True` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    obj = safe_load(path, "checkpoint")
    missing = {"format", "arch", "state_dict"} - set(obj) if isinstance(obj, dict) else {"all"}
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a nas-attn checkpoint (missing "
                              f"{sorted(missing)}; expected keys format, arch, state_dict, meta)")
    if obj["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has format {obj['format']!r}; this "
                              f"nas-attn reads format {CHECKPOINT_FORMAT}")
    return obj


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """`(arch, model, meta)`: the architecture, its model with the saved weights (eval mode, on
    `device`), and the saved metadata (metrics, epoch, ...)."""
    from ..arch import UNetArch
    from ..unet import build_unet

    obj = read_checkpoint(path)
    arch = UNetArch.from_json(obj["arch"])
    model = build_unet(arch)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: weights do not match its architecture: "
                              f"{e}") from None
    model.to(device).eval()
    return arch, model, dict(obj.get("meta") or {})


def find_checkpoint(path: Path) -> Path | None:
    """`path` if it is a file, else the checkpoint a `nas-attn train` folder holds (best.pt)."""
    if path.is_file():
        return path
    if path.is_dir() and (path / "best.pt").is_file():
        return path / "best.pt"
    return None


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (same temp-then-rename rule as checkpoints)."""
    return atomic_write(path, json.dumps(_plain(data), indent=2, allow_nan=True) + "\n")
