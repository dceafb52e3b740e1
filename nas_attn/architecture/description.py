"""`UNetArch`: the one description of a candidate architecture.

Frozen dataclasses; exact JSON round trip with a format version; validated on construction so
that nothing downstream (builder, exporter, dashboard) sees an impossible architecture.
Sites of a UNet of depth D (levels 0..D, D = bottleneck): `encoder.i`, `bottleneck`, `skip.i`,
`decoder.i` for i < D.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator, Mapping

from ..errors import ArchError
from . import registry

FORMAT_VERSION = 1
NORMS = ("batch", "instance", "group", "none")
ACTS = ("relu", "leaky_relu", "gelu", "silu", "elu")
UPSAMPLES = ("transpose", "interp")


def _is_int(v) -> bool:
    """An integer that is not a bool (JSON `true` is not a width)."""
    return isinstance(v, int) and not isinstance(v, bool)


MAX_CLASSES = 256
"""Class ids are stored as 8-bit values (masks read and written, `predict`'s output)."""
MAX_CHANNELS = 1024
MAX_JSON_CHARS = 1 << 20


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ArchError(msg)


@dataclass(frozen=True)
class AttnSpec:
    """Attention at one site: a registered name (or None for no attention) and its options."""

    name: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        opts = self.options
        if isinstance(opts, Mapping):
            opts = tuple(opts.items())
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))
        _check(self.name is None or isinstance(self.name, str),
               f"attention name must be a string or null, got {self.name!r}")
        _check(self.name is not None or not self.options,
               f"options {dict(self.options)} given with no attention (name null)")

    @classmethod
    def make(cls, name: str | None = None, **options) -> "AttnSpec":
        return cls(name, tuple(options.items()))

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.opts}

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "AttnSpec":
        if d is None or isinstance(d, str):
            return cls(d)
        _check(isinstance(d, Mapping), f"{where}: expected a mapping with name/options, got {d!r}")
        extra = set(d) - {"name", "options"}
        _check(not extra, f"{where}: unknown keys {sorted(extra)}; accepted: name, options")
        opts = d.get("options") or {}
        _check(isinstance(opts, Mapping), f"{where}.options: expected a mapping, got {opts!r}")
        return cls(d.get("name"), tuple(opts.items()))

    def short(self) -> str:
        if self.name is None:
            return "·"
        if not self.options:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={_fmt(v)}" for k, v in self.options) + ")"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class BlockSpec:
    """The conv block of every level: `convs` × (conv3 → norm → act), then optional dropout."""

    convs: int = 2
    norm: str = "batch"
    act: str = "relu"
    dropout: float = 0.0

    def __post_init__(self):
        _check(isinstance(self.convs, int) and 1 <= self.convs <= 4,
               f"block.convs must be an integer 1..4, got {self.convs!r}")
        _check(self.norm in NORMS, f"block.norm {self.norm!r} unknown; accepted: {', '.join(NORMS)}")
        _check(self.act in ACTS, f"block.act {self.act!r} unknown; accepted: {', '.join(ACTS)}")
        _check(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
               f"block.dropout must be in [0, 1), got {self.dropout!r}")


def _none_sites(n: int) -> tuple[AttnSpec, ...]:
    return tuple(AttnSpec() for _ in range(n))


@dataclass(frozen=True)
class UNetArch:
    """A UNet candidate. `classes` counts background: 2 = binary (one sigmoid output channel)."""

    spatial_dims: int = 2
    in_channels: int = 1
    classes: int = 2
    depth: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    block: BlockSpec = field(default_factory=BlockSpec)
    upsample: str = "transpose"
    encoder_name: str = "unet"
    """`unet` (the plain conv encoder) or `timm:<model>` (2D only, features_only)."""
    aux_channels: int = 0
    """Channels of an auxiliary modality fed to `cross` attention with context='aux' (0 = none)."""
    deep_supervision: bool = False
    encoder: tuple[AttnSpec, ...] = ()
    bottleneck: AttnSpec = field(default_factory=AttnSpec)
    skip: tuple[AttnSpec, ...] = ()
    decoder: tuple[AttnSpec, ...] = ()

    def __post_init__(self):
        d = self.depth
        _check(self.spatial_dims in (2, 3), f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        _check(_is_int(self.in_channels) and 1 <= self.in_channels <= MAX_CHANNELS,
               f"in_channels must be an integer 1..{MAX_CHANNELS}, got {self.in_channels!r}")
        _check(_is_int(self.classes) and 2 <= self.classes <= MAX_CLASSES,
               f"classes must be an integer 2..{MAX_CLASSES} (background counts; masks hold "
               f"8-bit class ids), got {self.classes!r}")
        _check(_is_int(d) and 1 <= d <= 7, f"depth must be an integer 1..7, got {d!r}")
        widths = tuple(self.widths)
        object.__setattr__(self, "widths", widths)
        _check(len(widths) == d + 1,
               f"widths has {len(widths)} entries but depth {d} needs {d + 1} (levels 0..{d})")
        _check(all(_is_int(w) and 1 <= w <= 4096 for w in widths),
               f"widths must be integers in 1..4096, got {list(widths)}")
        _check(self.upsample in UPSAMPLES,
               f"upsample {self.upsample!r} unknown; accepted: {', '.join(UPSAMPLES)}")
        _check(_is_int(self.aux_channels) and 0 <= self.aux_channels <= MAX_CHANNELS,
               f"aux_channels must be an integer 0..{MAX_CHANNELS}, got {self.aux_channels!r}")
        enc = self.encoder_name
        _check(enc == "unet" or (isinstance(enc, str) and enc.startswith("timm:") and len(enc) > 5),
               f"encoder_name {enc!r} unknown; accepted: 'unet' or 'timm:<model name>'")
        _check(enc == "unet" or self.spatial_dims == 2,
               f"encoder_name {enc!r}: timm encoders are 2D only; use 'unet' for 3D")
        for kind in ("encoder", "skip", "decoder"):
            sites = getattr(self, kind)
            if not sites:
                sites = _none_sites(d)
            sites = tuple(s if isinstance(s, AttnSpec) else AttnSpec.from_dict(s, kind) for s in sites)
            _check(len(sites) == d, f"{kind} has {len(sites)} sites but depth {d} needs {d}")
            object.__setattr__(self, kind, sites)
        if not isinstance(self.bottleneck, AttnSpec):
            object.__setattr__(self, "bottleneck", AttnSpec.from_dict(self.bottleneck, "bottleneck"))
        for site, spec in self.sites():
            if spec.name is None:
                continue
            registry.validate_options(spec.name, spec.opts, spatial_dims=self.spatial_dims,
                                      where=site)
            info = registry.get_info(spec.name)
            _check(info.kind != "paired" or site.startswith("skip."),
                   f"{site}: attention {spec.name!r} needs a guiding feature and may only go on "
                   f"a skip site (skip.0..skip.{d - 1})")
            if spec.opts.get("context") == "aux":
                _check(self.aux_channels > 0,
                       f"{site}: {spec.name!r} with context='aux' needs aux_channels > 0")

    # ----- sites -----------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return 1 if self.classes == 2 else self.classes

    def sites(self) -> Iterator[tuple[str, AttnSpec]]:
        for i, s in enumerate(self.encoder):
            yield f"encoder.{i}", s
        yield "bottleneck", self.bottleneck
        for i, s in enumerate(self.skip):
            yield f"skip.{i}", s
        for i, s in enumerate(self.decoder):
            yield f"decoder.{i}", s

    def site(self, name: str) -> AttnSpec:
        return dict(self.sites())[name]

    def with_sites(self, **assign: AttnSpec) -> "UNetArch":
        """Copy with sites replaced; keys like `skip_2`, `encoder_0` or `bottleneck`."""
        lists = {k: list(getattr(self, k)) for k in ("encoder", "skip", "decoder")}
        bottleneck = self.bottleneck
        for key, spec in assign.items():
            if key == "bottleneck":
                bottleneck = spec
            else:
                kind, idx = key.rsplit("_", 1)
                lists[kind][int(idx)] = spec
        return replace(self, bottleneck=bottleneck, **{k: tuple(v) for k, v in lists.items()})

    def without_attention(self) -> "UNetArch":
        """The plain UNet of the same macro (widths, depth, block, upsampling): every site
        empty. What a gain from attention is measured against."""
        d = self.depth
        return replace(self, encoder=_none_sites(d), bottleneck=AttnSpec(),
                       skip=_none_sites(d), decoder=_none_sites(d))

    def attention_names(self) -> list[str]:
        return sorted({s.name for _, s in self.sites() if s.name})

    # ----- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "block":
                v = {bf.name: getattr(v, bf.name) for bf in fields(BlockSpec)}
            elif f.name in ("encoder", "skip", "decoder"):
                v = [s.to_dict() for s in v]
            elif f.name == "bottleneck":
                v = v.to_dict()
            elif f.name == "widths":
                v = list(v)
            out[f.name] = v
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetArch":
        _check(isinstance(d, Mapping), f"architecture must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", None)
        _check(version == FORMAT_VERSION,
               f"architecture format_version {version!r} is not supported; this nas-attn reads "
               f"version {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        extra = set(d) - names
        _check(not extra, f"architecture has unknown keys {sorted(extra)}; accepted: {sorted(names)}")
        if "block" in d:
            b = d["block"]
            _check(isinstance(b, Mapping), f"block must be an object, got {b!r}")
            bnames = {f.name for f in fields(BlockSpec)}
            _check(not set(b) - bnames,
                   f"block has unknown keys {sorted(set(b) - bnames)}; accepted: {sorted(bnames)}")
            d["block"] = BlockSpec(**b)
        for kind in ("encoder", "skip", "decoder"):
            if kind in d:
                _check(isinstance(d[kind], list), f"{kind} must be a list, got {d[kind]!r}")
                d[kind] = tuple(AttnSpec.from_dict(s, f"{kind}.{i}") for i, s in enumerate(d[kind]))
        if "bottleneck" in d:
            d["bottleneck"] = AttnSpec.from_dict(d["bottleneck"], "bottleneck")
        if "widths" in d:
            _check(isinstance(d["widths"], list), f"widths must be a list, got {d['widths']!r}")
            d["widths"] = tuple(d["widths"])
        try:
            return cls(**d)
        except TypeError as e:  # wrong value types that dataclass construction rejects
            raise ArchError(f"invalid architecture: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> "UNetArch":
        if len(text) > MAX_JSON_CHARS:
            raise ArchError(f"architecture JSON of {len(text):,} characters; an architecture "
                            f"is at most {MAX_JSON_CHARS:,}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"architecture is not valid JSON: {e}") from None
        except RecursionError:
            raise ArchError("architecture JSON is nested too deeply (an architecture is a few "
                            "levels of objects and lists)") from None
        return cls.from_dict(data)

    # ----- summaries -------------------------------------------------------------------------
    def summary(self) -> str:
        """One line, for tables and the dashboard."""
        enc = "" if self.encoder_name == "unet" else f" {self.encoder_name}"
        head = (f"{self.spatial_dims}D{enc} d{self.depth} w{'-'.join(map(str, self.widths))} "
                f"{self.block.norm}/{self.block.act}x{self.block.convs} {self.upsample}")
        parts = []
        for kind in ("encoder", "skip", "decoder"):
            specs = getattr(self, kind)
            used = [f"{i}:{s.short()}" for i, s in enumerate(specs) if s.name]
            if used:
                parts.append(f"{dict(encoder='enc', skip='skip', decoder='dec')[kind]}"
                             f"[{' '.join(used)}]")
            if kind == "encoder" and self.bottleneck.name:
                parts.append(f"bott[{self.bottleneck.short()}]")
        return head + " | " + (" ".join(parts) if parts else "no attention")

    def describe(self) -> str:
        """Several lines: macro choices, then one line per site with attention."""
        lines = [
            f"UNet {self.spatial_dims}D, encoder {self.encoder_name}, depth {self.depth}, "
            f"widths {list(self.widths)}",
            f"in_channels {self.in_channels}, classes {self.classes} "
            f"(out_channels {self.out_channels}), aux_channels {self.aux_channels}",
            f"block: {self.block.convs} x conv3-{self.block.norm}-{self.block.act}, dropout "
            f"{self.block.dropout}; upsample {self.upsample}; deep supervision "
            f"{'on' if self.deep_supervision else 'off'}",
        ]
        for site, spec in self.sites():
            lines.append(f"  {site:<11} {spec.short() if spec.name else 'none'}")
        return "\n".join(lines)

    def level_of(self, site: str) -> int:
        return self.depth if site == "bottleneck" else int(site.split(".")[1])

    def spatial_scale(self, site: str) -> float:
        return 1 / math.pow(2, self.level_of(site))
