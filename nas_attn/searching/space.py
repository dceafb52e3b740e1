"""Search spaces: the YAML schema (validated with pydantic) and loading with clear errors.

A space says, for each site kind (encoder, bottleneck, skip, decoder) and optionally per level,
which attention modules may go there and the ranges of their options; the macro choices; the
training choices worth searching; the budget per trial; the objectives; the data.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..architecture import registry
from ..errors import ArchError

SPACES_DIR = Path(__file__).resolve().parents[1] / "spaces"
"""The ready spaces: YAML files shipped inside the package (package data of the wheel)."""
OBJECTIVES = ("dice", "params", "flops", "latency_ms")
SAMPLERS = ("tpe", "random", "gp", "nsga2", "brute")
PRUNERS = ("hyperband", "sha", "median", "none")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A numeric range: `{low: 1e-4, high: 1e-2, log: true}` (int when low/high are ints)."""

    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None

    @model_validator(mode="after")
    def _order(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log ranges need low > 0, got {self.low}")
        return self

    def is_int(self) -> bool:
        """Integer range when low, high (and step) are written as integers."""
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.low, self.high) + ((self.step,) if self.step else ()))

    def count(self) -> float:
        if not self.is_int():
            return math.inf
        step = int(self.step or 1)
        return (int(self.high) - int(self.low)) // step + 1


Scalar = Union[bool, int, float, str, None]
# an option or training value: a fixed scalar, a list of choices, or a numeric range
Choice = Union[Range, list[Scalar], Scalar]


def choice_count(c: Choice) -> float:
    if isinstance(c, Range):
        return c.count()
    if isinstance(c, list):
        return len(c)
    return 1


class SiteRule(_Strict):
    """Which attention modules may go on a site kind, optionally per level."""

    choices: list[str | None] = Field(default_factory=lambda: [None])
    levels: dict[int, list[str | None]] = Field(default_factory=dict)
    """Per-level overrides: `{0: [null, se], 3: [null, self]}`; levels beyond the depth are ignored."""

    @field_validator("choices", "levels", mode="before")
    @classmethod
    def _none_words(cls, v):
        fix = lambda xs: [None if x in ("none", "null", None) else x for x in xs]  # noqa: E731
        if isinstance(v, list):
            return fix(v)
        if isinstance(v, dict):
            return {k: fix(x) if isinstance(x, list) else x for k, x in v.items()}
        return v

    def at(self, level: int) -> list[str | None]:
        return self.levels.get(level, self.choices)


class Macro(_Strict):
    depth: list[int] = [4]
    base_width: list[int] = [16]
    width_factor: float = 2.0
    max_width: int = 512
    convs: list[int] = [2]
    norm: list[str] = ["batch"]
    act: list[str] = ["relu"]
    upsample: list[str] = ["transpose"]
    encoder: list[str] = ["unet"]
    deep_supervision: list[bool] = [False]

    @field_validator("depth", "base_width", "convs", "norm", "act", "upsample", "encoder",
                     "deep_supervision", mode="before")
    @classmethod
    def _listify(cls, v):
        return v if isinstance(v, list) else [v]

    def widths(self, depth: int, base: int) -> tuple[int, ...]:
        return tuple(min(self.max_width, int(round(base * self.width_factor ** i)))
                     for i in range(depth + 1))


class Budget(_Strict):
    epochs: int = Field(6, ge=1)
    samples_per_epoch: int | None = Field(None, ge=1)
    max_time_s: float | None = Field(None, gt=0)
    """Wall-time cap per trial (training stops after the epoch that crosses it)."""


class Constraints(_Strict):
    max_params: float | None = Field(None, gt=0)
    max_flops: float | None = Field(None, gt=0)
    """Forward FLOPs for one training patch."""
    max_activation_mb: float | None = Field(None, gt=0)
    """Activation memory saved for backward at the training batch size (device independent)."""
    max_latency_ms: float | None = Field(None, gt=0)


STRATEGIES = ("trials", "oneshot")


class OneShotSettings(_Strict):
    """Phase 1 (the weight-sharing supernet) and phase 2 (placements scored with its weights)."""

    epochs: int | None = Field(None, ge=1)
    """Supernet training epochs; default: `budget_factor` x the epochs of the full budget
    `finalize` retrains with."""
    budget_factor: float = Field(2.0, gt=0, le=10)
    """The supernet's epochs when `epochs` is not given, in full budgets. Every path gets a
    share of the steps: on inia19-macaque the default space's supernet scored 0.15 on its
    paths after one full budget and 0.64-0.69 after two (a plain UNet: 0.77 after one)."""
    samples_per_epoch: int | None = Field(None, ge=1)
    """Default: the budget's samples per epoch."""
    warmup: float = Field(0.5, ge=0, lt=1)
    """Share of the supernet's steps that train its plain path (every site `none`) before fair
    sampling starts, so that the shared trunk learns first. Measured on inia19-macaque (default
    space, two full budgets): the paths scored 0.64-0.69 without warm-up, 0.75-0.84 with 0.5."""
    max_supernets: int = Field(2, ge=1)
    """At most this many macro combinations get a supernet; the space's other macro values are
    fixed (to their first value), which the search says in one line."""
    trials: int = Field(300, ge=1)
    """New placements phase 2 scores when --trials is not given (a placement the sampler
    proposes again does not count; `nas_attn.searching.oneshot.budget`)."""
    recalibration_batches: int = Field(8, ge=1)
    """Training batches that re-estimate BatchNorm statistics for each placement."""
    range_values: int = Field(3, ge=2, le=8)
    """A searched numeric option range becomes this many values in the supernet."""
    split: int = Field(1, ge=1, le=4)
    """Few-shot split: each supernet becomes this many sub-supernets, split on the site holding
    the heaviest module (its heaviest choices alone, the rest together); each starts from the
    trained shared supernet and is fine-tuned for `split_epochs`. 1: no split."""
    split_epochs: int | None = Field(None, ge=1)
    """Fine-tuning epochs of each sub-supernet; default: a quarter of the supernet's epochs."""


class SearchSettings(_Strict):
    strategy: Literal[STRATEGIES] = "trials"  # type: ignore[valid-type]
    """`trials` trains every candidate; `oneshot` trains one weight-sharing supernet and scores
    placements with its weights (`nas_attn.searching.oneshot`)."""
    oneshot: OneShotSettings = Field(default_factory=OneShotSettings)
    sampler: Literal[SAMPLERS] | None = None  # type: ignore[valid-type]
    pruner: Literal[PRUNERS] = "hyperband"  # type: ignore[valid-type]
    baselines: bool = True
    trials: int = Field(10, ge=1)
    """Trials `nas-attn search` runs when --trials is not given."""
    seed: int = 0
    n_startup_trials: int = Field(5, ge=0)


class Space(_Strict):
    """A search space file (see nas_attn/spaces/default.yaml for an annotated example)."""

    description: str = ""
    spatial_dims: Literal[2, 3] | None = None
    macro: Macro = Field(default_factory=Macro)
    encoder: SiteRule = Field(default_factory=SiteRule)
    bottleneck: SiteRule = Field(default_factory=SiteRule)
    skip: SiteRule = Field(default_factory=SiteRule)
    decoder: SiteRule = Field(default_factory=SiteRule)
    options: dict[str, dict[str, Choice]] = Field(default_factory=dict)
    """Option ranges per attention module; an option not listed keeps the module's default."""
    training: dict[str, Choice] = Field(default_factory=dict)
    """TrainConfig fields: a fixed value, a list of choices or a range."""
    budget: Budget = Field(default_factory=Budget)
    constraints: Constraints = Field(default_factory=Constraints)
    objectives: list[Literal[OBJECTIVES]] = ["dice"]  # type: ignore[valid-type]
    data: dict[str, Any] = Field(default_factory=dict)
    """DataConfig fields (source, patch_size, augment, ...)."""
    search: SearchSettings = Field(default_factory=SearchSettings)

    # ------------------------------------------------------------------------------------
    @model_validator(mode="after")
    def _semantics(self):
        """The one validation of a space: every site choice, macro value, option value and
        training value goes through the checks the architecture, the registry, TrainConfig
        and DataConfig apply themselves, so a space that loads samples only buildable
        architectures (tests/test_search.py samples every ready space)."""
        from ..data import DataConfig

        _check_sites(self)
        _check_macro(self.macro, self.spatial_dims)
        _check_options(self)
        _check_training(self.training)
        try:
            DataConfig(**self.data)
        except ValidationError as e:
            raise ValueError("data: " + first_errors(e)) from None
        if self.objectives[0] != "dice":
            raise ValueError(f"objectives: the first objective must be dice, got {self.objectives}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: repeated entries in {self.objectives}")
        return self

    # ------------------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def rule(self, kind: str) -> SiteRule:
        return getattr(self, kind)

    def option_choices(self, name: str) -> dict[str, Choice]:
        return self.options.get(name, {})

    def count_architectures(self) -> float:
        """Distinct architectures the space allows (inf when a float range is searched)."""
        m = self.macro
        total = 0.0
        other = (len(m.base_width) * len(m.convs) * len(m.norm) * len(m.act) * len(m.upsample)
                 * len(m.encoder) * len(m.deep_supervision))
        for depth in m.depth:
            n = other
            for kind in ("encoder", "skip", "decoder"):
                for lvl in range(depth):
                    n *= self._site_count(self.rule(kind).at(lvl))
            n *= self._site_count(self.bottleneck.at(depth))
            total += n
        return total

    def _site_count(self, names: list[str | None]) -> float:
        total = 0.0
        for n in names:
            c = 1.0
            if n is not None:
                for ch in self.option_choices(n).values():
                    c *= choice_count(ch)
            total += c
        return total


# ----- the checks behind Space._semantics --------------------------------------------------------
def _dims_of(space_dims: int | None, name: str) -> int:
    """The spatial dims to check a module in: the space's, else the module's first."""
    return space_dims or registry.get_info(name).dims[0]


def _check_sites(space: Space) -> None:
    known = registry.names()
    for kind in ("encoder", "bottleneck", "skip", "decoder"):
        rule: SiteRule = getattr(space, kind)
        for where, names in [(f"{kind}.choices", rule.choices)] + [
                (f"{kind}.levels.{lvl}", v) for lvl, v in rule.levels.items()]:
            if not names:
                raise ValueError(f"{where}: empty list; use [none] for no attention")
            for n in names:
                if n is None:
                    continue
                if n not in known:
                    raise ValueError(f"{where}: unknown attention {n!r}; known: none, "
                                     f"{', '.join(known)}")
                if registry.get_info(n).kind == "paired" and kind != "skip":
                    raise ValueError(f"{where}: {n!r} needs a guiding feature and may only "
                                     "be listed under skip")
                try:
                    registry.validate_options(n, {}, spatial_dims=_dims_of(space.spatial_dims, n))
                except ArchError as e:
                    raise ValueError(f"{where}: {e}") from None


def _check_macro(m: Macro, spatial_dims: int | None) -> None:
    """Each macro value as the architecture itself checks it (depth and widths, block, upsample,
    encoder; a timm encoder must exist and give enough feature levels for every depth)."""
    from ..architecture.description import BlockSpec, UNetArch

    dims = spatial_dims or 2
    for key in ("depth", "base_width", "convs", "norm", "act", "upsample", "encoder",
                "deep_supervision"):
        if not getattr(m, key):
            raise ValueError(f"macro.{key}: empty list; give at least one value")
    if not 1 <= m.max_width <= 4096:
        raise ValueError(f"macro.max_width must be 1..4096, got {m.max_width}")
    for b in m.base_width:
        if isinstance(b, int) and b > m.max_width:
            raise ValueError(f"macro.base_width {b!r} is above macro.max_width ({m.max_width}); "
                             "widths above max_width would be cut to it in silence (raise "
                             "macro.max_width, up to 4096, to allow wider)")
    checks = [(f"macro.depth / base_width ({d}, {b})",
               lambda d=d, b=b: UNetArch(spatial_dims=dims, depth=d, widths=m.widths(d, b)))
              for d in m.depth for b in m.base_width]
    checks += [(f"macro.{key}", lambda key=key, v=v: BlockSpec(**{key: v}))
               for key in ("convs", "norm", "act") for v in getattr(m, key)]
    checks += [("macro.upsample", lambda v=v: UNetArch(spatial_dims=dims, upsample=v))
               for v in m.upsample]
    checks += [("macro.encoder", lambda v=v: _check_encoder(v, dims, m.depth))
               for v in m.encoder]
    for where, check in checks:
        try:
            check()
        except (ArchError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None


def _check_encoder(name: str, dims: int, depths: list[int]) -> None:
    from ..architecture.description import UNetArch

    UNetArch(spatial_dims=dims, encoder_name=name)  # 'unet' or 'timm:<model>', 2D only
    if name == "unet":
        return
    import timm

    model = name.split(":", 1)[1]
    if model not in timm.list_models():
        raise ArchError(f"timm has no model {model!r} (see timm.list_models())")
    levels = len(timm.create_model(model, pretrained=False, features_only=True).feature_info)
    if max(depths) + 1 > levels:
        raise ArchError(f"encoder {model!r} gives {levels} feature levels; depth must be at "
                        f"most {levels - 1}, got {max(depths)}")


def _values(choice: Choice) -> list:
    """The concrete values a choice can take (an int range: all of them, up to 256; a float
    range: both ends)."""
    if isinstance(choice, Range):
        if choice.is_int() and choice.count() <= 256:
            step = int(choice.step or 1)
            return list(range(int(choice.low), int(choice.high) + 1, step))
        return [choice.low, choice.high]
    return list(choice) if isinstance(choice, list) else [choice]


def _check_options(space: Space) -> None:
    """Every value of every option through the registry, then the module built with it."""
    known = registry.names()
    for name, opts in space.options.items():
        if name not in known:
            raise ValueError(f"options.{name}: unknown attention {name!r}; known: "
                             f"{', '.join(known)}")
        info = registry.get_info(name)
        accepted = info.options()
        dims = _dims_of(space.spatial_dims, name)
        for key, choice in opts.items():
            if key not in accepted:
                raise ValueError(f"options.{name}.{key}: {name!r} has no option {key!r}; "
                                 f"accepted: {', '.join(accepted) or 'none'}")
            for v in _values(choice):
                try:
                    registry.create_attention(name, 8, spatial_dims=dims, guide_channels=8
                                              if info.kind == "paired" else None, **{key: v})
                except ArchError as e:
                    raise ValueError(f"options.{name}.{key}: value {v!r}: {e}") from None


def _check_training(training: dict[str, Choice]) -> None:
    from ..errors import TrainingError
    from ..training import TrainConfig

    fields = TrainConfig.model_fields
    for key, choice in training.items():
        if key not in fields:
            raise ValueError(f"training.{key}: not a training setting; accepted: "
                             f"{', '.join(fields)}")
        for v in _values(choice):
            try:
                TrainConfig.make(**{key: v})
            except TrainingError as e:
                raise ValueError(f"training.{key}: value {v!r}: "
                                 f"{str(e).splitlines()[-1].strip()}") from None


_UNION_TAGS = {"int", "float", "bool", "str", "list", "dict", "none"}


def _is_tag(part) -> bool:
    """A union alternative in a pydantic error location (`int`, `list[...]`,
    `function-after[_order(), Range]`), not a field or an index."""
    return isinstance(part, str) and ("[" in part or part in _UNION_TAGS)


def _deepest_per_union(errors: list[dict]) -> list[dict]:
    """Of the errors pydantic lists for each alternative of a union (a value, a list, a range
    ...), the one that got furthest, with the alternatives' names dropped from its location:
    one message per field instead of five."""
    best: dict[tuple, tuple[tuple, int, dict]] = {}
    for i, err in enumerate(errors):
        loc = tuple(err["loc"])
        cut = next((k for k, part in enumerate(loc) if _is_tag(part)), len(loc))
        root = loc[:cut]
        # furthest in; then an alternative whose shape matched (a value error, not "should be
        # a valid list" of an alternative that never applied); then the last
        rank = (len([x for x in loc if not _is_tag(x)]), not str(err["type"]).endswith("_type"))
        if root not in best or rank >= best[root][0]:
            best[root] = (rank, i, {**err, "loc": tuple(x for x in loc if not _is_tag(x))})
    return [err for _, _, err in sorted(best.values(), key=lambda t: t[1])]


def first_errors(e: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in _deepest_per_union(e.errors())[:limit]:
        loc = ".".join(str(x) for x in err["loc"])
        val = err.get("input")
        msg = str(err["msg"]).removeprefix("Value error, ")
        shown = "" if isinstance(val, (dict, list)) or err["type"] == "value_error" else \
            f" (got {val!r})"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return "; ".join(parts)


def full_budget(space: "Space") -> dict[str, Any]:
    """The full budget of a retraining (finalize, the noise check, one-shot phase 1): never
    less than a trial saw: the trial's samples per epoch (when the space sets them) for at least
    twice its epochs and at least the TrainConfig default of 30, with no time limit."""
    from ..training import TrainConfig

    b = space.budget
    out: dict[str, Any] = {"epochs": max(TrainConfig.model_fields["epochs"].default,
                                         2 * b.epochs)}
    if b.samples_per_epoch:
        out["samples_per_epoch"] = b.samples_per_epoch
    return out
