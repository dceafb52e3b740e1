"""nas-attn: search which attention modules to put where in a segmentation UNet.

The public API (a notebook session)::

    import nas_attn as na

    arch = na.UNetArch(depth=3, widths=(8, 16, 32, 64), skip=(na.AttnSpec.make("gate"),) * 3)
    model = na.build_unet(arch)                      # a torch.nn.Module
    na.list_attention()                              # ['cbam', 'cbam_channel', 'channel_self', ...]
    se = na.create_attention("se", 32, spatial_dims=2, reduction=8)
    space = na.load_space("smoke")                   # a ready space, or a YAML path
    study = na.search("smoke", trials=4, runs_dir="runs")          # an optuna.Study
    final = na.finalize(study, top=1, seeds=2, confirm_seeds=2, epochs=2, runs_dir="runs")  # race
    result = na.train(arch, data="builtin", epochs=2, out_dir="runs/train/mine")
    na.export(result, "runs/export/mine")           # its best weights, patch size, normalisation
    loaded = na.load_model("runs/export/mine")      # arch.json + weights.pt (model.py never runs)
    na.predict(loaded, "images/", "masks_out/")     # one mask per image
    scores = na.evaluate(loaded, "data/test")       # pooled Dice per class, HD95

Verbs are functions, packages are nouns: the functions above live in `nas_attn.api` (plain
functions with explicit signatures and docstrings); the packages that do the work are named
so that no module shadows a function (`nas_attn.searching`, `nas_attn.training`,
`nas_attn.exporting`, `nas_attn.inference.prediction`, `nas_attn.inference.evaluation`).

Reading the code: `tests/test_layout.py` lists the layers top to bottom; the DESIGN notes in
`nas_attn.architecture.registry` (options from constructor signatures), `nas_attn.models` (one
file per attention family, copied into model.py) and `nas_attn.atomic` (every write atomic)
say what to keep.

Every name is imported on first use (PEP 562), so `import nas_attn` itself loads neither torch
nor optuna, timm or albumentations; building a model needs torch only. Anything not listed in
`__all__` is internal and may change.
"""
from __future__ import annotations

from .version import __version__  # noqa: F401  (public: nas_attn.__version__)

_API = ("search", "finalize", "noise", "train", "export", "load_model", "predict", "evaluate")

__all__ = sorted([*_API, "UNetArch", "AttnSpec", "BlockSpec", "build_unet", "create_attention",
                  "list_attention", "register", "load_space", "NasAttnError", "__version__"])


def _module_of(name: str):
    """The module that defines the public `name` (plain imports, so the layout test's import
    graph sees them; no import strings)."""
    if name in _API:
        from . import api
        return api
    if name in ("UNetArch", "AttnSpec", "BlockSpec"):
        from .architecture import description
        return description
    if name == "build_unet":
        from .architecture import builder
        return builder
    if name in ("create_attention", "list_attention", "register"):
        from .architecture import registry
        return registry
    if name == "load_space":
        from .searching import space_files
        return space_files
    if name == "NasAttnError":
        from . import errors
        return errors
    return None


def __getattr__(name: str):
    module = _module_of(name)
    if module is None:
        raise AttributeError(f"module 'nas_attn' has no attribute {name!r}; the public names "
                             f"are {', '.join(__all__)}")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
