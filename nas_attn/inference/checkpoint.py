"""Reading checkpoints (written by `nas_attn.training.checkpoint`): a dict of plain tensors,
the architecture JSON and metrics, always loaded with `weights_only=True` onto the CPU, so a
file can never run code. Loading a trained model needs this module, not the training code."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingError

CHECKPOINT_FORMAT = 1


class CheckpointError(TrainingError):
    """A checkpoint file that is missing, unreadable or not a nas-attn checkpoint."""


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
    from ..architecture.description import UNetArch
    from ..architecture.builder import build_unet

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
