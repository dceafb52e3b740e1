"""Cost of a candidate before training: parameters, FLOPs, activation memory, latency.

Measured under the settings its training will use (the trial's `Runtime`: device, autocast
dtype, memory format) and on inputs of the training batch's shape, drawn from a generator seeded
by `seed`: the figures of an architecture do not depend on which trial measures it, and cuDNN
sees the training's shapes only (no extra tuning for a batch-1 probe).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    params: int
    flops: float
    """Forward FLOPs per input of the training patch size (torch's flop counter, counted on a
    training batch and divided by its size)."""
    activation_mb: float
    """Tensors saved for backward by one forward at the training batch size, in the training's
    autocast dtype (any device)."""
    latency_ms: float
    """Milliseconds per input: the fastest of a few eval-mode forward passes of one training
    batch on the training device, autocast and memory format as in training, divided by the
    batch size (the minimum, not the mean: on a shared machine other processes only ever add
    time)."""

    def as_dict(self) -> dict:
        return asdict(self)

    def violations(self, constraints) -> list[str]:
        out = []
        for field, value, unit in [("max_params", self.params, ""), ("max_flops", self.flops, ""),
                                   ("max_activation_mb", self.activation_mb, " MB"),
                                   ("max_latency_ms", self.latency_ms, " ms")]:
            limit = getattr(constraints, field)
            if limit is not None and value > limit:
                out.append(f"{field.removeprefix('max_')} {value:.4g}{unit} > {field} {limit:.4g}")
        return out


def _inputs(arch, shape, batch, runtime, seed: int):
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch, arch.in_channels, *shape, generator=gen)
    aux = torch.randn(batch, arch.aux_channels, *shape, generator=gen) if arch.aux_channels else None
    return runtime.to_device(x), None if aux is None else runtime.to_device(aux)


def measure_cost(model: torch.nn.Module, arch, patch_shape, *, batch_size: int = 1,
                 device: torch.device | str = "cpu", latency_reps: int = 5, runtime=None,
                 seed: int = 0) -> Cost:
    """Cost of `model` (built from `arch`). `runtime` (a `nas_attn.device.Runtime`) gives the
    device, autocast and memory format; without it, float32 on `device`. The model is moved to
    the runtime's device and memory format; batch-norm running statistics are reset after."""
    from ..device import Runtime

    if runtime is None:
        runtime = Runtime(torch.device(device), spatial_dims=len(tuple(patch_shape)))
    batch = max(1, int(batch_size))
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model = runtime.prepare_model(model)
    x, aux = _inputs(arch, patch_shape, batch, runtime, seed)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        # keep nothing: returning `t` itself makes a reference cycle through its grad_fn that
        # Python's garbage collector cannot see (torch's saved-tensors-hooks note); the graph
        # then outlived the call, about 60 MB a call on a 168x128 batch of 4
        return None

    def unpack(_):
        raise RuntimeError("measure_cost's graph is for counting; it has no backward")

    # one training-mode forward counts both the FLOPs and the tensors saved for backward (it
    # also warms the device up for the timed passes below)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack), runtime.autocast(), \
            FlopCounterMode(display=False) as counter:
        out = model(x, aux)
    del out
    flops = float(counter.get_total_flops()) / batch
    latency = _latency(model, x, aux, runtime, latency_reps)
    for m in model.modules():  # the random batch above must not leak into norm statistics
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.reset_running_stats()
    model.train(was_training)
    return Cost(params=params, flops=flops, activation_mb=saved / 2**20, latency_ms=latency)


def _latency(model: torch.nn.Module, x, aux, runtime, reps: int) -> float:
    """Milliseconds per input: the fastest of `reps` eval-mode forward passes of the batch `x`
    (leaves the model in eval mode)."""
    dev = runtime.device
    model.eval()
    times = []
    with torch.no_grad(), runtime.autocast():
        for _ in range(max(1, reps)):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            model(x, aux)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append((time.perf_counter() - t0) * 1000 / x.shape[0])
    return min(times)


def measure_latency(model: torch.nn.Module, arch, patch_shape, *, batch_size: int, runtime,
                    reps: int = 5, seed: int = 0) -> float:
    """`Cost.latency_ms` alone, on the inputs `measure_cost` uses (same shape and seed); the
    model must already be on the runtime's device. Eval mode only: no statistics change."""
    x, aux = _inputs(arch, patch_shape, max(1, int(batch_size)), runtime, seed)
    was_training = model.training
    try:
        return _latency(model, x, aux, runtime, reps)
    finally:
        model.train(was_training)


def smallest_fits(space, total_bytes: float | None = None) -> str | None:
    """None when the space's smallest candidate (the least depth and base width, no attention,
    batch 1, the space's patch or the smallest legal one) can train within `total_bytes` (this
    machine's memory by default) by `architecture.footprint`'s lower bound; otherwise one line
    saying what it needs and what to change. `spaces check` says it before any search does."""
    import os

    from ..architecture.description import UNetArch
    from ..architecture.footprint import estimate, gb

    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    m = space.macro
    depth, base = min(m.depth), min(m.base_width)
    dims = space.spatial_dims or len(space.data.get("patch_size") or ()) or 2
    arch = UNetArch(spatial_dims=dims, depth=depth, widths=m.widths(depth, base))
    patch = space.data.get("patch_size") or [2 ** depth] * dims
    patch = [patch] * dims if isinstance(patch, int) else list(patch)
    need = estimate(arch, patch).training_bytes
    if need <= total_bytes:
        return None
    return (f"even the smallest candidate ({arch.summary().split(' | ')[0]}, patch "
            f"{'x'.join(map(str, patch))}, batch 1) needs at least {gb(need)} to train, more "
            f"than this machine's {gb(total_bytes)}: lower macro.base_width, macro.max_width, "
            "macro.depth or data.patch_size")
