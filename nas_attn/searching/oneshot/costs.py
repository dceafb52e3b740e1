"""The cost of a placement in phase 2 without building and probing it.

An attention module's input and output have the same shape at its site whatever the other sites
hold, so a placement's parameters, forward FLOPs and tensors saved for backward are those of the
plain UNet of its macro plus, per site, what its module adds there. `PlacementCosts` measures
each of those once (`measure_cost` on the plain UNet and on the plain UNet with that one module,
the first time a placement holds it) and adds them up: at most one probe per module and site
instead of one per placement. `tests/test_oneshot.py` checks the sums against `measure_cost` on
random placements, 2D and 3D. Latency does not add up; the objective times it on the supernet's
path (`measure_latency`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from ...architecture.description import AttnSpec, UNetArch
from ..cost import Cost
from .supernet import macro_key


def _spec_key(site: str, spec: AttnSpec) -> str:
    return site + json.dumps(spec.to_dict(), sort_keys=True)


class PlacementCosts:
    """`costs(arch, latency_ms)`: the `Cost` of `arch` from memoised probes. `measure` probes
    one architecture (the trial's runtime, batch size and seed, as for a trained candidate)."""

    def __init__(self, measure: Callable[[UNetArch], Cost]):
        self._measure = measure
        self._plain: dict[str, Cost] = {}
        self._added: dict[tuple[str, str], tuple[int, float, float]] = {}
        self.probes = 0
        """How many architectures were probed so far."""

    def _probe(self, arch: UNetArch) -> Cost:
        self.probes += 1
        return self._measure(arch)

    def __call__(self, arch: UNetArch, latency_ms: float) -> Cost:
        key = macro_key(arch)
        if key not in self._plain:
            self._plain[key] = self._probe(arch.without_attention())
        plain = self._plain[key]
        params, flops, act = plain.params, plain.flops, plain.activation_mb
        for site, spec in arch.sites():
            if not spec.name:
                continue
            k = (key, _spec_key(site, spec))
            if k not in self._added:
                one = self._probe(arch.without_attention().with_sites(
                    **{site.replace(".", "_"): spec}))
                self._added[k] = (one.params - plain.params, one.flops - plain.flops,
                                  one.activation_mb - plain.activation_mb)
            dp, df, da = self._added[k]
            params, flops, act = params + dp, flops + df, act + da
        return replace(plain, params=params, flops=flops, activation_mb=act,
                       latency_ms=latency_ms)
