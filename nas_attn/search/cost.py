"""Cost of a candidate before training: parameters, FLOPs, activation memory, latency."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    params: int
    flops: float
    """Forward FLOPs for one input of the training patch size (torch's flop counter)."""
    activation_mb: float
    """Tensors saved for backward by one forward at the training batch size (any device)."""
    latency_ms: float
    """Fastest of a few forward passes for one input in eval mode on the training device (the
    minimum, not the mean: on a shared machine other processes only ever add time)."""

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


def _inputs(arch, shape, batch, device):
    x = torch.randn(batch, arch.in_channels, *shape, device=device)
    aux = torch.randn(batch, arch.aux_channels, *shape, device=device) if arch.aux_channels else None
    return x, aux


def measure_cost(model: torch.nn.Module, arch, patch_shape, *, batch_size: int = 1,
                 device: torch.device | str = "cpu", latency_reps: int = 5) -> Cost:
    device = torch.device(device)
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.to(device)
    x, aux = _inputs(arch, patch_shape, 1, device)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, aux)
    flops = float(counter.get_total_flops())
    times = []
    with torch.no_grad():
        for _ in range(latency_reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(x, aux)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) * 1000)
    latency = min(times[1:])
    model.train()
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    xb, auxb = _inputs(arch, patch_shape, batch_size, device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(xb, auxb)
    del out
    for m in model.modules():  # the random batch above must not leak into norm statistics
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.reset_running_stats()
    model.train(was_training)
    return Cost(params=params, flops=flops, activation_mb=saved / 2**20, latency_ms=latency)
