"""The one place that decides the device, mixed precision (AMP) and memory format.

Nothing else in the package names "cuda" or calls `torch.amp` directly: training code asks a
`Runtime` to prepare the model, move a batch, open an autocast region and make a grad scaler.

Policy:
- device: `select_device(None | "auto")` takes CUDA, then MPS, then CPU; "cpu", "cuda",
  "cuda:N" and "mps" are accepted by name and must be available.
- AMP on CUDA only: bfloat16 where the GPU supports it (no grad scaler needed), else float16
  with a `GradScaler`. On CPU and MPS `autocast()` is a no-op and everything stays float32.
- channels_last on CUDA only: `channels_last` for 2D models, `channels_last_3d` for 3D.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import NasAttnError

ACCEPTED = ("auto", "cpu", "cuda", "cuda:N", "mps")


class DeviceError(NasAttnError, ValueError):
    """A device name that is unknown or not available on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices usable here, best first (always ends with "cpu")."""
    out = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        out.append("mps")
    return out + ["cpu"]


def select_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: `None`/"auto" picks CUDA, then MPS, then CPU.

    Raises `DeviceError` naming what is accepted (unknown name) or what is available (a known
    device that this machine does not have).
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {requested!r}; accepted: {', '.join(ACCEPTED)}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} is not available (no CUDA GPU visible to "
                              f"torch {torch.__version__}); available: "
                              f"{', '.join(available_devices())}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {requested!r} is not available; available: "
                              f"{', '.join(available_devices())}")
    if dev.type == "mps" and not _mps_available():
        raise DeviceError(f"device {requested!r} is not available; available: "
                          f"{', '.join(available_devices())}")
    if dev.type == "cpu":
        return torch.device("cpu")
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices).

    `deterministic=True` also asks cuDNN/cuBLAS and torch for deterministic algorithms (slower;
    ops without a deterministic version warn instead of failing). `False` lets cuDNN benchmark.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


@dataclass(frozen=True)
class Runtime:
    """How to run on one device: AMP dtype, memory format.

    Build with `Runtime.create(...)`, which applies the policy in the module docstring; the
    constructor takes the fields as given (for tests and special cases).
    """

    device: torch.device
    amp: bool = False
    """Mixed precision on (CUDA only)."""
    channels_last: bool = False
    """Channels-last memory format (CUDA only): 2D `channels_last`, 3D `channels_last_3d`."""
    dtype: torch.dtype = torch.float32
    """Compute dtype inside `autocast()`: bfloat16 / float16 with AMP, else float32."""
    spatial_dims: int = 2

    @classmethod
    def create(cls, device: str | torch.device | None = None, *, amp: bool = True,
               channels_last: bool = True, spatial_dims: int = 2) -> "Runtime":
        """Select the device and apply the policy; `amp`/`channels_last` are requests that only
        take effect on CUDA."""
        dev = select_device(device)
        on_cuda = dev.type == "cuda"
        use_amp = bool(amp and on_cuda)
        dtype = torch.float32
        if use_amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if on_cuda:
            # TF32 for the float32 parts (loss, optimizer, anything autocast leaves in fp32)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(device=dev, amp=use_amp, channels_last=bool(channels_last and on_cuda),
                   dtype=dtype, spatial_dims=spatial_dims)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def describe(self) -> str:
        amp = f"AMP {str(self.dtype).replace('torch.', '')}" if self.amp else "float32"
        return f"{self.device} · {amp}" + (" · channels_last" if self.channels_last else "")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device (float32 master weights) in the chosen memory format."""
        if self.channels_last:
            return model.to(device=self.device, memory_format=self.memory_format)
        return model.to(device=self.device)

    def to_device(self, batch: Any) -> Any:
        """Move a tensor, or a dict/list/tuple of them, to the device (non-blocking on CUDA).

        Floating tensors with the model's rank (B, C, *spatial) also get the memory format.
        """
        if isinstance(batch, torch.Tensor):
            nb = self.is_cuda
            if self.channels_last and batch.is_floating_point() and batch.dim() == self.spatial_dims + 2:
                return batch.to(self.device, non_blocking=nb, memory_format=self.memory_format)
            return batch.to(self.device, non_blocking=nb)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def autocast(self):
        """Autocast region for forward passes; a plain no-op context without AMP."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.amp.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Gradient scaler: active only for float16 AMP (bfloat16 and float32 need none)."""
        enabled = self.amp and self.dtype == torch.float16
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)

    def empty_cache(self) -> None:
        """Give cached accelerator memory back (after an out-of-memory error or a trial)."""
        if self.is_cuda:
            torch.cuda.empty_cache()
        elif self.device.type == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()
