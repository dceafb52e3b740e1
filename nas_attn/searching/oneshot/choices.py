"""What the supernets of a space hold: the macro combinations that get one (capped), and per
site the attention modules with their option values.

A one-shot supernet holds a finite set of modules, so a searched numeric option range becomes
`oneshot.range_values` values (`discrete_space`); phase 2 then samples placements from that
space, so every placement it scores is a path of a supernet.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from ...architecture.description import AttnSpec, UNetArch
from ...errors import SpaceError
from ..sampling import NONE, DataInfo, sample_arch, site_choices
from ..space import Range, Space

MACRO_KEYS = ("depth", "base_width", "convs", "norm", "act", "upsample", "encoder",
              "deep_supervision")
FIX_ORDER = ("encoder", "deep_supervision", "act", "norm", "convs", "upsample", "depth",
             "base_width")
"""Which macro values are fixed first when the combinations exceed `max_supernets`: width and
depth, which decide most of a UNet's score, are kept searchable longest."""


def _range_values(r: Range, n: int) -> list:
    if r.is_int() and r.count() <= n:
        return list(range(int(r.low), int(r.high) + 1, int(r.step or 1)))
    if r.log:
        vals = [math.exp(math.log(r.low) + (math.log(r.high) - math.log(r.low)) * i / (n - 1))
                for i in range(n)]
    else:
        vals = [r.low + (r.high - r.low) * i / (n - 1) for i in range(n)]
    if r.is_int():
        return sorted({int(round(v)) for v in vals})
    return [float(f"{v:.4g}") for v in vals]


def discrete_space(space: Space) -> tuple[Space, list[str]]:
    """The space with every attention option range replaced by a list of values; notes say
    which ranges became which values."""
    n = space.search.oneshot.range_values
    options, notes = {}, []
    for name, opts in space.options.items():
        options[name] = {}
        for key, choice in opts.items():
            if isinstance(choice, Range):
                options[name][key] = _range_values(choice, n)
                notes.append(f"options.{name}.{key}: the range {choice.low}..{choice.high} is "
                             f"searched as {options[name][key]} in the supernet")
            else:
                options[name][key] = choice
    for name, opts in options.items():
        for key, values in opts.items():
            if key == "context" and "aux" in (values if isinstance(values, list) else [values]):
                raise SpaceError(f"options.{name}.context: one-shot search cannot hold "
                                 "context 'aux' (it adds an encoder for the auxiliary modality "
                                 "to the trunk); use strategy 'trials' for it")
    return space.model_copy(update={"options": options}), notes


@dataclass(frozen=True)
class MacroPlan:
    """The macro combinations that get a supernet, and the values fixed to keep them few."""

    combos: tuple[dict[str, Any], ...]
    """Each: the sampler's parameter name -> value, for the searched macro parameters."""
    fixed: dict[str, Any]
    """Sampler parameters pinned for phase 2 (macro values fixed by the cap)."""
    note: str | None


def macro_plan(space: Space) -> MacroPlan:
    """One supernet per combination of the space's macro values, at most `max_supernets`:
    beyond that, the parameters of `FIX_ORDER` are fixed to their first value one after the
    other until the combinations fit."""
    m = space.macro
    values = {k: list(getattr(m, k)) for k in MACRO_KEYS}
    cap = space.search.oneshot.max_supernets
    fixed: dict[str, Any] = {}
    for key in FIX_ORDER:
        if math.prod(len(v) for v in values.values()) <= cap:
            break
        if len(values[key]) > 1:
            fixed[key] = values[key][0]
            values[key] = values[key][:1]
    searched = [k for k in MACRO_KEYS if len(values[k]) > 1]
    combos = tuple(dict(zip(searched, vals))
                   for vals in itertools.product(*(values[k] for k in searched)))
    note = None
    if fixed:
        note = ("one-shot: at most " f"{cap} supernet(s) (search.oneshot.max_supernets); macro "
                "fixed to " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return MacroPlan(combos, fixed, note)


class _Fixed:
    """A stand-in for an Optuna trial that returns fixed values (first choice otherwise)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def _get(self, name, default):
        return self.values.get(name, default)

    def suggest_categorical(self, name, choices):
        return self._get(name, choices[0])

    def suggest_int(self, name, low, high, **kw):
        return self._get(name, low)

    def suggest_float(self, name, low, high, **kw):
        return self._get(name, low)


def macro_arch(space: Space, info: DataInfo, combo: dict[str, Any],
               fixed: dict[str, Any]) -> UNetArch:
    """The plain UNet (every site empty) of one macro combination."""
    values = {**fixed, **combo}
    arch = sample_arch(_Fixed({**values, **{k: NONE for k in _site_params(space, values)}}),
                       space, info)
    return arch


def _site_params(space: Space, values: dict[str, Any]) -> list[str]:
    from ..sampling import site_param

    depth = values.get("depth", space.macro.depth[0])
    sites = [f"encoder.{i}" for i in range(depth)] + ["bottleneck"] + \
        [f"skip.{i}" for i in range(depth)] + [f"decoder.{i}" for i in range(depth)]
    return [f"{site_param(space, s, depth)}.attn" for s in sites]


def site_specs(space: Space, macro: UNetArch) -> dict[str, list[AttnSpec]]:
    """Per site of `macro`, every module with every combination of its option values
    (`space` already discrete), `none` included when the space allows it."""
    out: dict[str, list[AttnSpec]] = {}
    for site, _ in macro.sites():
        specs = []
        for name in site_choices(space, site, macro.depth):
            if name == NONE:
                specs.append(AttnSpec())
                continue
            opts = space.option_choices(name)
            keys = list(opts)
            lists = [v if isinstance(v, list) else [v] for v in opts.values()]
            for vals in itertools.product(*lists):
                specs.append(AttnSpec.make(name, **dict(zip(keys, vals))))
        out[site] = specs
    return out


def placements(choices: dict[str, list[AttnSpec]]) -> float:
    return math.prod(len(v) for v in choices.values())


@dataclass(frozen=True, eq=False)
class Unit:
    """One supernet: a macro, the modules each site holds, and for a few-shot split which site
    was split and which group of its choices this sub-supernet holds."""

    macro: UNetArch
    choices: dict[str, list[AttnSpec]]
    split_site: str | None = None
    group: int | None = None

    def holds(self, arch: UNetArch) -> bool:
        from .supernet import macro_key

        if macro_key(arch) != macro_key(self.macro):
            return False
        if self.split_site is None:
            return True
        return dict(arch.sites())[self.split_site] in self.choices[self.split_site]

    def describe(self) -> str:
        if self.split_site is None:
            return self.macro.summary()
        held = ", ".join(c.short() if c.name else "none" for c in self.choices[self.split_site])
        return f"{self.macro.summary()} [{self.split_site}: {held}]"


def split_groups(choices: dict[str, list[AttnSpec]], weights: dict[str, list[int]], k: int
                 ) -> tuple[str, list[list[AttnSpec]]] | None:
    """Few-shot split (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021) of one
    supernet into at most `k`: the site holding the heaviest module (most parameters; the first
    such site in the trunk's order on a tie) is split; its `k - 1` heaviest choices get a
    sub-supernet each, its other choices share the last. None when `k` is 1 or the site has a
    single choice."""
    if k <= 1:
        return None
    site = max(weights, key=lambda s: max(weights[s], default=0))
    n = len(choices[site])
    if n < 2:
        return None
    k = min(k, n)
    order = sorted(range(n), key=lambda i: -weights[site][i])
    alone = order[:k - 1]
    groups = [[choices[site][i]] for i in alone]
    groups.append([c for i, c in enumerate(choices[site]) if i not in alone])
    return site, groups
