"""nas-attn: search which attention modules to put where in a segmentation UNet.

The public API (a notebook session)::

    import nas_attn as na

    arch = na.UNetArch(depth=3, widths=(8, 16, 32, 64), skip=(na.AttnSpec.make("gate"),) * 3)
    model = na.build_unet(arch)                      # a torch.nn.Module
    na.list_attention()                              # ['cbam', 'cbam_channel', 'channel_self', ...]
    se = na.create_attention("se", 32, spatial_dims=2, reduction=8)
    space = na.load_space("smoke")                   # a ready space, or a YAML path
    study = na.search("smoke", trials=4, runs_dir="runs")          # an optuna.Study
    result = na.train(arch, data="builtin", epochs=2, out_dir="runs/train/mine")
    na.export(result, "runs/export/mine")           # its best weights, patch size, normalisation
    loaded = na.load_model("runs/export/mine")      # model.py + weights.pt, or a checkpoint

Every name is imported on first use (PEP 562), so `import nas_attn` itself loads neither torch
nor optuna, timm or albumentations; building a model needs torch only. `na.search`, `na.train`
and `na.export` are the modules of those names, made callable (`nas_attn._callable`): calling
one runs `nas_attn.api.search` / `train` / `export`, whose docstrings say the arguments.
Anything not listed in `__all__` is internal and may change.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_NAMES = {
    "UNetArch": "arch", "AttnSpec": "arch", "BlockSpec": "arch",
    "build_unet": "unet",
    "create_attention": "registry", "list_attention": "registry", "register": "registry",
    "load_space": "search.space",
    "load_model": "api",
    "NasAttnError": "errors",
}

_CALLABLE_MODULES = ("search", "train", "export")  # callable: they run nas_attn.api.<name>

__all__ = sorted([*_NAMES, *_CALLABLE_MODULES]) + ["__version__"]


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:  # `import nas_attn.train` binds the same (callable) module
        return importlib.import_module(f".{name}", __name__)
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'nas_attn' has no attribute {name!r}; the public names "
                             f"are {', '.join(__all__)}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
