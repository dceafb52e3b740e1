"""The weight-sharing supernet: one UNet trunk whose every attention site holds every module the
space allows there (`none` included), of which one forward pass runs exactly one (single path).

Follows SPOS (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", arXiv:1904.00420) with FairNAS's strict per-site fairness (Chu et al., "FairNAS:
Rethinking Evaluation Fairness of Weight Sharing Neural Architecture Search", arXiv:1907.01845).
Deviations: one path per optimizer step (FairNAS accumulates m paths per step: tried on
inia19-macaque at equal compute, four paths per step, its paths scored 0.00, against 0.15 for
one path per step at the same budget: a quarter of the steps); fairness is kept
per site over consecutive steps instead: in every block of m steps (m = the site's number of
choices) each choice of the site runs exactly once, in an order drawn from the step number, so
the path of a step is a function of (seed, step) and a resumed training draws the same paths.
A warm-up on the plain path comes first (phase 1 gives it `search.oneshot.warmup` of the steps):
without it, the inia19-macaque supernet's shared trunk learned too slowly for its paths to
score near stand-alone models (see phase1.py).

Torch only. The trunk is the package's own `UNet` / `TimmUNet`, built through their
`make_attention` hook, so a path of the supernet *is* the stand-alone model of that placement:
`standalone_state(supernet, arch)` gives the weights `build_unet(arch)` loads, and the two
compute the same outputs.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...architecture.description import AttnSpec, UNetArch
from ...architecture.registry import create_attention

Choices = Mapping[str, Sequence[AttnSpec]]
"""Per site (`encoder.0`, `bottleneck`, `skip.1`, ...), the modules it may hold."""


class ChoiceSite(nn.Module):
    """Every candidate module of one site; `forward` runs the `active` one."""

    def __init__(self, site: str, modules: Sequence[nn.Module]):
        super().__init__()
        self.site = site
        self.choices = nn.ModuleList(modules)
        self.active = 0

    def forward(self, x: torch.Tensor, *context) -> torch.Tensor:
        return self.choices[self.active](x, *context)


def _path_keys(choices: Choices, macro: UNetArch) -> list[str]:
    sites = [s for s, _ in macro.sites()]
    missing = [s for s in sites if s not in choices]
    if missing:
        raise ValueError(f"no choices given for site(s) {missing}")
    return sites


class SuperNet(nn.Module):
    """A UNet of `macro`'s numbers with a `ChoiceSite` at every site.

    In training mode with `sampling` on, every forward first draws the next path: for the first
    `warmup_steps` forwards the plain UNet's (`warmup_path`), then the fair per-site schedule
    (the step counter is part of the state dict, so it resumes). Otherwise the path set with
    `set_path` runs.
    """

    def __init__(self, macro: UNetArch, choices: Choices, seed: int = 0):
        super().__init__()
        from ...architecture.builder import build_unet

        self.macro = macro
        self.sites = _path_keys(choices, macro)
        self.choices = {s: tuple(choices[s]) for s in self.sites}
        self.seed = int(seed)
        self.step = 0
        self.sampling = False
        self.warmup_steps = 0  # the first forwards train the plain path (`warmup_path`)

        def make(name, channels, *, spatial_dims, guide_channels=None, **opts):
            site = name  # the builder passes the site name through the site table (below)
            return ChoiceSite(site, [
                create_attention(spec.name, channels, spatial_dims=spatial_dims,
                                 guide_channels=guide_channels, **spec.opts)
                for spec in self.choices[site]])

        self.net = build_unet(macro, make_attention=make,
                              sites={s: (s, {}) for s in self.sites})
        self._site_modules = {m.site: m for m in self.net.modules() if isinstance(m, ChoiceSite)}
        self._prefix = {m.site: name for name, m in self.net.named_modules()
                        if isinstance(m, ChoiceSite)}

    # ----- paths --------------------------------------------------------------------------
    def index_of(self, site: str, spec: AttnSpec) -> int:
        try:
            return self.choices[site].index(spec)
        except ValueError:
            raise ValueError(f"{site}: {spec.short() if spec.name else 'none'} is not among "
                             f"the supernet's choices there") from None

    def set_path(self, arch: UNetArch) -> None:
        """Run the placement of `arch` (which must have the supernet's macro)."""
        if macro_key(arch) != macro_key(self.macro):
            raise ValueError(f"architecture {arch.summary()} has another macro than the "
                             f"supernet ({self.macro.summary()})")
        for site, spec in arch.sites():
            self._site_modules[site].active = self.index_of(site, spec)

    def path(self) -> dict[str, int]:
        return {s: m.active for s, m in self._site_modules.items()}

    def fair_path(self, step: int) -> dict[str, int]:
        """Step `step`'s path: per site, block `step // m` is a permutation of the m choices
        drawn from (seed, site, block); the step takes its `step % m`-th entry."""
        out = {}
        for site in self.sites:
            m = len(self.choices[site])
            block, pos = divmod(step, m)
            order = list(range(m))
            random.Random(f"{self.seed}/{site}/{block}").shuffle(order)
            out[site] = order[pos]
        return out

    def warmup_path(self, step: int) -> dict[str, int]:
        """A warm-up step's path: `none` at every site that offers it (the plain UNet), the
        fair schedule at the others."""
        none = AttnSpec()
        fair = self.fair_path(step)
        return {s: self.choices[s].index(none) if none in self.choices[s] else fair[s]
                for s in self.sites}

    def _draw(self) -> None:
        path = (self.warmup_path(self.step) if self.step < self.warmup_steps
                else self.fair_path(self.step - self.warmup_steps))
        for site, i in path.items():
            self._site_modules[site].active = i
        self.step += 1

    # ----- forward ------------------------------------------------------------------------
    def forward_all(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        if self.training and self.sampling:
            self._draw()
        return self.net.forward_all(x, aux)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_all(x, aux)[0]

    # the step counter travels with the weights (resume.pt, supernet.pt)
    def get_extra_state(self) -> Any:
        return torch.tensor([self.step, self.seed], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        self.step, self.seed = (int(v) for v in state.tolist())

    # ----- sizes and subnets ---------------------------------------------------------------
    def standalone_state(self, arch: UNetArch) -> dict[str, torch.Tensor]:
        """The state dict of `build_unet(arch)`: the trunk's tensors and, at each site, those
        of the chosen module."""
        chosen = {self._prefix[s]: f"{self._prefix[s]}.choices.{self.index_of(s, spec)}"
                  for s, spec in arch.sites()}
        out = {}
        for key, value in self.net.state_dict().items():
            for plain, inside in chosen.items():
                if key.startswith(plain + ".choices."):
                    if key.startswith(inside + "."):
                        out[plain + key[len(inside):]] = value
                    break
            else:
                out[key] = value
        return out

    def extract(self, arch: UNetArch) -> nn.Module:
        """The stand-alone model of `arch` with the supernet's weights (a copy)."""
        from ...architecture.builder import build_unet

        model = build_unet(arch)
        model.load_state_dict({k: v.detach().clone() for k, v in
                               self.standalone_state(arch).items()})
        return model.to(next(self.parameters()).device)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def choice_parameters(self) -> dict[str, list[int]]:
        """Per site, the parameter count of each of its choices."""
        return {s: [sum(p.numel() for p in c.parameters()) for c in m.choices]
                for s, m in self._site_modules.items()}

    def inherit_from(self, other: "SuperNet") -> None:
        """Load `other`'s weights: the trunk's, and at each site those of the same module in
        `other` (whose choices must include this supernet's). The few-shot split starts its
        sub-supernets from the shared one this way; the path step counter starts at 0."""
        if macro_key(other.macro) != macro_key(self.macro):
            raise ValueError("inherit_from: the two supernets have other macros")
        remap = {}
        for site, specs in self.choices.items():
            mine, theirs = self._prefix[site], other._prefix[site]
            for i, spec in enumerate(specs):
                remap[f"{mine}.choices.{i}."] = f"{theirs}.choices.{other.index_of(site, spec)}."
        src = other.net.state_dict()
        out = {}
        for key in self.net.state_dict():
            for mine, theirs in remap.items():
                if key.startswith(mine):
                    out[key] = src[theirs + key[len(mine):]].detach().clone()
                    break
            else:
                out[key] = src[key].detach().clone()
        self.net.load_state_dict(out)
        self.step = 0


def macro_key(arch: UNetArch) -> str:
    """The architecture with every site empty, as JSON: what one supernet fixes."""
    return arch.without_attention().to_json()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[dict], runtime) -> int:
    """Re-estimate the BatchNorm running statistics of `model`'s current path on `batches`
    (the exact mean over them: momentum None), everything else in eval mode (no dropout, no
    path sampling, no parameter change). Returns the number of BatchNorm layers reset."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for batch in batches:
            with runtime.autocast():
                model(batch["image"], batch.get("aux"))
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.eval()
    return len(norms)
