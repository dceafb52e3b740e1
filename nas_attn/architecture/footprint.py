"""Memory an architecture needs, counted from its description before anything is built.

`estimate(arch, patch, batch)` adds up the trunk of the UNet only (every level's convolutions,
the up-sampling and the head; attention modules and norms left out), so its figures are a
lower bound: what a training needs at least. It is for refusing the impossible at once (a depth 7
UNet of width 4096, a patch larger than memory) with one line, instead of allocating gigabytes
until the machine swaps or the process is killed; the cost probe measures the real figures of
everything that passes.

Training memory counted: weights, their gradients and Adam's two moments (4 x 4 bytes per
parameter) plus the activations saved for backward (per conv: its output and the norm's, in
the compute dtype) times the batch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .description import UNetArch


@dataclass(frozen=True)
class Footprint:
    params: int
    activation_bytes: float
    """Saved for backward by one training step (the whole batch)."""

    @property
    def training_bytes(self) -> float:
        return 16.0 * self.params + self.activation_bytes


def estimate(arch: UNetArch, patch: Sequence[int], batch: int = 1,
             act_bytes: int = 4) -> Footprint:
    dims = arch.spatial_dims
    k = 3 ** dims
    w = list(arch.widths)
    convs = arch.block.convs
    patch = [int(p) for p in patch][:dims] or [1] * dims
    vox = [math.prod(math.ceil(p / 2 ** lvl) for p in patch) for lvl in range(len(w))]
    params = 0
    saved = 0.0  # values per sample
    for lvl, wl in enumerate(w):  # encoder levels and the bottleneck
        cin = arch.in_channels + arch.aux_channels if lvl == 0 else w[lvl - 1]
        params += cin * wl * k + wl * wl * k * (convs - 1)
        saved += 2 * convs * wl * vox[lvl]
    for lvl in range(len(w) - 2, -1, -1):  # decoder levels
        wl = w[lvl]
        params += w[lvl + 1] * wl * 2 ** dims + 2 * wl * wl * k + wl * wl * k * (convs - 1)
        saved += (3 + 2 * convs) * wl * vox[lvl]  # up-sampled, concatenated, convs
    params += w[0] * arch.out_channels
    return Footprint(params=params, activation_bytes=saved * batch * act_bytes)


def gb(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MB"
