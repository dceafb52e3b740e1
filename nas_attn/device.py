"""The one place that decides the device, mixed precision (AMP) and memory format.

Nothing else in the package names "cuda" or calls `torch.amp` directly: training code asks a
`Runtime` to prepare the model, move a batch, open an autocast region and make a grad scaler.

Policy:
- device: `select_device(None | "auto")` takes CUDA, then MPS, then CPU; "cpu", "cuda",
  "cuda:N" and "mps" are accepted by name and must be available.
- A chosen CUDA device with an index becomes the process's current device
  (`torch.cuda.set_device`), so pinned memory, caches and the bf16 check use that GPU and no
  context is opened on GPU 0 by a worker meant for another GPU.
- AMP on CUDA only: bfloat16 where the selected GPU supports it natively (emulated bf16, as on
  V100/T4, does not count), else float16 with a `GradScaler` that skips steps whose gradients
  are not finite. On CPU and MPS `autocast()` is a no-op and everything stays float32.
- channels_last on CUDA only: `channels_last` for 2D models, `channels_last_3d` for 3D.
- Optimizers are fused on CUDA (`optimizer_kwargs()`), masks travel as uint8 and become int64
  on the device (`to_device`), and each trial's peak GPU memory is measured
  (`reset_peak_memory()` / `peak_memory_mb()`; None off CUDA).
- `is_oom(e)` / `release_memory(e, runtime)`: how callers recognise an out-of-memory error and
  give the memory back before going on.
"""
from __future__ import annotations

import contextlib
import gc
import os
import random
import traceback
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
    if dev.type == "cuda" and dev.index is not None:
        # one process per GPU: pinned memory, the caching allocator and `torch.cuda.*` queries
        # must use this GPU, not GPU 0
        torch.cuda.set_device(dev)
    return dev


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether the CUDA `device` runs bfloat16 natively (Ampere or newer). Emulated bf16 (V100,
    T4) is not counted: it is slower than float16 with a scaler."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def is_oom(e: BaseException) -> bool:
    """An accelerator or host out-of-memory error (torch's own type or its older messages)."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "not enough memory" in msg)


def release_memory(exc: BaseException | None = None, runtime: Runtime | None = None) -> None:
    """Drop the references an exception's frames hold to tensors, collect, and give cached
    accelerator memory back (after an out-of-memory error, before the next trial)."""
    if exc is not None and exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if runtime is not None:
        runtime.empty_cache()


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


def enable_tf32() -> None:
    """Let CUDA float32 matmuls (cuBLAS) and convolutions (cuDNN) run in TF32.

    torch >= 2.9 has per-backend `fp32_precision` settings, the documented API there: the
    `allow_tf32` flags are deprecated (torch 2.9 warns when they are set). Older torch has only
    `allow_tf32`. Read the state back the same way: torch refuses a mix of the two (2.14's
    `matmul.allow_tf32` and `torch.get_float32_matmul_precision()` raise once the new setter
    chose "tf32").
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        matmul.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = "tf32"
        cudnn.rnn.fp32_precision = "tf32"  # as `cudnn.allow_tf32 = True` did: conv and RNN alike
    else:
        matmul.allow_tf32 = True
        cudnn.allow_tf32 = True


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
            dtype = torch.bfloat16 if cuda_bf16_native(dev) else torch.float16
        if on_cuda:
            enable_tf32()  # for the float32 parts (loss, optimizer, what autocast leaves in fp32)
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

        Floating tensors with the model's rank (B, C, *spatial) also get the memory format. A
        uint8 "mask" in a dict (how loaders ship label maps: 8x less to copy) becomes int64 on
        the device.
        """
        if isinstance(batch, torch.Tensor):
            nb = self.is_cuda
            if self.channels_last and batch.is_floating_point() and batch.dim() == self.spatial_dims + 2:
                return batch.to(self.device, non_blocking=nb, memory_format=self.memory_format)
            return batch.to(self.device, non_blocking=nb)
        if isinstance(batch, dict):
            return {k: self._mask_to_device(v) if k == "mask" else self.to_device(v)
                    for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def _mask_to_device(self, mask: Any) -> Any:
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8:
            return self.to_device(mask).long()
        return self.to_device(mask)

    def optimizer_kwargs(self, optimizer: str = "adamw") -> dict[str, Any]:
        """Extra optimizer arguments: `fused=True` on CUDA (one kernel per parameter group and
        step instead of several per parameter; AdamW and SGD both have a fused CUDA kernel)."""
        return {"fused": True} if self.is_cuda and optimizer in ("adamw", "sgd") else {}

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory measurement (CUDA; a no-op elsewhere)."""
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory_bytes(self) -> int | None:
        """All the memory of the device: the GPU's on CUDA, the machine's RAM otherwise (None
        when the system does not say)."""
        if self.is_cuda:
            return int(torch.cuda.get_device_properties(self.device).total_memory)
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None

    def check_fits(self, arch, patch, batch: int) -> None:
        """`OutOfMemoryError` (one line) when training `arch` on `patch` at `batch` needs more
        than this device's whole memory by the footprint's lower bound: refused before
        anything is allocated."""
        from .errors import OutOfMemoryError
        from .architecture.footprint import estimate, gb

        total = self.memory_bytes()
        if total is None or not patch:
            return
        fp = estimate(arch, patch, batch, act_bytes=2 if self.amp else 4)
        if fp.training_bytes > total:
            shape = "x".join(str(int(p)) for p in patch)
            raise OutOfMemoryError(
                f"{arch.summary()} needs at least {gb(fp.training_bytes)} to train at batch "
                f"{batch} on {shape} patches ({fp.params:,} parameters: "
                f"{gb(16 * fp.params)} with gradients and optimizer state; activations "
                f"{gb(fp.activation_bytes)}), more than all of {self.device}'s "
                f"{gb(total)}; use smaller widths, depth, patch or batch")

    def peak_memory_mb(self) -> float | None:
        """Peak GPU memory allocated by tensors since `reset_peak_memory()`, in MiB; None off
        CUDA (CPU and MPS have no such counter)."""
        if not self.is_cuda:
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def compile(self, fn, mode: str | None = None):
        """`torch.compile` of a module or a bound method (fewer kernel launches for a long run
        of one model: fused elementwise kernels; `mode="reduce-overhead"` adds CUDA graphs).
        The compiled callable shares the module's parameters."""
        return torch.compile(fn, mode=mode)

    def autocast(self):
        """Autocast region for forward passes; a plain no-op context without AMP."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.amp.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Gradient scaler: active only for float16 AMP (bfloat16 and float32 need none). It
        skips an optimizer step whose gradients are not finite and lowers its scale."""
        enabled = self.amp and self.dtype == torch.float16
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)

    def empty_cache(self) -> None:
        """Give cached accelerator memory back (after an out-of-memory error or a trial)."""
        if self.is_cuda:
            torch.cuda.empty_cache()
        elif self.device.type == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()
