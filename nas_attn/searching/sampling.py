"""Trial -> (UNetArch, training overrides). Stable parameter names, static choice lists.

Names: `depth`, `base_width`, `convs`, `norm`, `act`, `upsample`, `encoder`, `deep_supervision`
(only when the space offers more than one value), `<site>.attn` for every site
(`encoder.0`, `bottleneck`, `skip.2`, `decoder.1`; `none` for no attention),
`<site>.<module>.<option>` only when that module is chosen there, and `train.<field>`.
Works with any `optuna.trial.BaseTrial`, so it is tested with `optuna.trial.FixedTrial`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..architecture.description import AttnSpec, BlockSpec, UNetArch
from .space import Choice, Range, Space

NONE = "none"


@dataclass(frozen=True)
class DataInfo:
    """What the data fixes in an architecture."""

    spatial_dims: int = 2
    in_channels: int = 1
    classes: int = 2
    aux_channels: int = 0


def suggest(trial, name: str, choice: Choice) -> Any:
    """Suggest one value from a fixed scalar, a list of choices or a range."""
    if isinstance(choice, Range):
        if choice.is_int():
            return trial.suggest_int(name, int(choice.low), int(choice.high),
                                     step=int(choice.step or 1), log=choice.log)
        return trial.suggest_float(name, float(choice.low), float(choice.high),
                                   step=choice.step, log=choice.log)
    if isinstance(choice, list):
        if len(choice) == 1:
            return choice[0]
        return trial.suggest_categorical(name, choice)
    return choice


def _attn_choices(names: list[str | None]) -> list[str]:
    return [NONE if n is None else n for n in names]


def site_choices(space: Space, site: str, depth: int) -> list[str]:
    """The attention names a site may take (the bottleneck is level `depth`)."""
    kind, _, level = site.partition(".")
    return _attn_choices(space.rule(kind).at(depth if kind == "bottleneck" else int(level)))


def site_param(space: Space, site: str, depth: int) -> str:
    """A site's parameter prefix: its name, except that the bottleneck's carries the depth
    (`bottleneck.4`) when its choices differ between the space's depths (`bottleneck.levels`),
    since an Optuna parameter keeps one list of choices."""
    if site == "bottleneck" and len({tuple(space.bottleneck.at(d)) for d in space.macro.depth}) > 1:
        return f"bottleneck.{depth}"
    return site


def sample_arch(trial, space: Space, data: DataInfo) -> UNetArch:
    m = space.macro
    depth = suggest(trial, "depth", m.depth)
    base = suggest(trial, "base_width", m.base_width)
    block = BlockSpec(convs=suggest(trial, "convs", m.convs), norm=suggest(trial, "norm", m.norm),
                      act=suggest(trial, "act", m.act))
    sites: dict[str, list[AttnSpec]] = {"encoder": [], "skip": [], "decoder": []}
    bottleneck = AttnSpec()
    names = [f"encoder.{i}" for i in range(depth)] + ["bottleneck"] + \
            [f"skip.{i}" for i in range(depth)] + [f"decoder.{i}" for i in range(depth)]
    for site in names:
        param = site_param(space, site, depth)
        choice = suggest(trial, f"{param}.attn", site_choices(space, site, depth))
        if choice == NONE:
            spec = AttnSpec()
        else:
            opts = {k: suggest(trial, f"{param}.{choice}.{k}", v)
                    for k, v in space.option_choices(choice).items()}
            spec = AttnSpec.make(choice, **opts)
        if site == "bottleneck":
            bottleneck = spec
        else:
            sites[site.split(".")[0]].append(spec)
    return UNetArch(
        spatial_dims=data.spatial_dims, in_channels=data.in_channels, classes=data.classes,
        depth=depth, widths=m.widths(depth, base), block=block,
        upsample=suggest(trial, "upsample", m.upsample),
        encoder_name=suggest(trial, "encoder", m.encoder),
        aux_channels=data.aux_channels,
        deep_supervision=suggest(trial, "deep_supervision", m.deep_supervision),
        encoder=tuple(sites["encoder"]), bottleneck=bottleneck, skip=tuple(sites["skip"]),
        decoder=tuple(sites["decoder"]),
    )


def sample_training(trial, space: Space) -> dict[str, Any]:
    return {k: suggest(trial, f"train.{k}", v) for k, v in space.training.items()}


def _default(choice: Choice) -> Any:
    if isinstance(choice, Range):
        if choice.log:
            mid = math.sqrt(choice.low * choice.high)
        else:
            mid = (choice.low + choice.high) / 2
        return int(round(mid)) if choice.is_int() else mid
    return choice[0] if isinstance(choice, list) else choice


def recipe_default(key: str, choice: Choice) -> Any:
    """A baseline's value for a searched training setting: the TrainConfig recipe's default
    when the space allows it (so a baseline is not handicapped by, say, the middle of an lr
    range), else the middle of the range (the first of a list)."""
    from ..training import TrainConfig

    field = TrainConfig.model_fields.get(key)
    default = None if field is None else field.default
    if isinstance(choice, Range) and isinstance(default, (int, float)) \
            and not isinstance(default, bool) and choice.low <= default <= choice.high:
        return int(default) if choice.is_int() else float(default)
    if isinstance(choice, list) and default in choice:
        return default
    return _default(choice)


def baseline_params(space: Space) -> list[tuple[str, dict[str, Any]]]:
    """Hand-designed baselines from the same space: the plain UNet, and the Attention U-Net
    (gates on every skip) when the space allows gates on every skip."""
    m = space.macro
    fixed: dict[str, Any] = {}
    for name, values in [("depth", m.depth), ("base_width", m.base_width), ("convs", m.convs),
                         ("norm", m.norm), ("act", m.act), ("upsample", m.upsample),
                         ("encoder", m.encoder), ("deep_supervision", m.deep_supervision)]:
        if len(values) > 1:
            fixed[name] = values[0]
    for k, v in space.training.items():
        if isinstance(v, (list, Range)) and not (isinstance(v, list) and len(v) == 1):
            fixed[f"train.{k}"] = recipe_default(k, v)
    depth = m.depth[0]
    sites = [f"encoder.{i}" for i in range(depth)] + ["bottleneck"] + \
            [f"skip.{i}" for i in range(depth)] + [f"decoder.{i}" for i in range(depth)]
    out = []
    plain = dict(fixed)
    for s in sites:
        if len(site_choices(space, s, depth)) > 1:
            if NONE not in site_choices(space, s, depth):
                plain = None
                break
            plain[f"{site_param(space, s, depth)}.attn"] = NONE
    if plain is not None:
        out.append(("plain_unet", plain))
        skips = [f"skip.{i}" for i in range(depth)]
        if all("gate" in site_choices(space, s, depth) for s in skips):
            gated = dict(plain)
            for s in skips:
                if len(site_choices(space, s, depth)) > 1:
                    gated[f"{s}.attn"] = "gate"
                for k, v in space.option_choices("gate").items():
                    if isinstance(v, (list, Range)) and not (isinstance(v, list) and len(v) == 1):
                        gated[f"{s}.gate.{k}"] = _default(v)
            out.append(("attention_unet", gated))
    return out
