"""The model code: torch only, written to be copied whole into a standalone `model.py`.

Every file here imports only torch, the standard library (math, typing, functools, itertools,
collections) and its siblings; top-level names are unique across the files, so the exporter
copies whole definitions (classes, functions, constants) without renaming anything. timm is
imported only inside the constructors of `timm_layers.py`.

- `layers`      dimension-generic conv / norm / activation helpers, `ConvBlock`
- `tokens`      the budgeted scaled-dot-product token attention every token module uses
- `channel`, `spatial`, `gate`, `dual`, `cross`, `selfattn`: one file per attention family
- `timm_layers` timm's attention layers and `TimmUNet` (a timm encoder)
- `unet`        `UNet`, `UNetDecoder` (plain numbers in, no `UNetArch`)
- `factory`     `ATTENTION` (the one table of names) and `make_attention`
- `sliding`, `infer`: sliding-window / TTA prediction and the training normalisation
- `standalone`  model.py's own functions (build_model, load, preprocess, predict), copied last

DESIGN (keep): one file per attention family, each class's docstring citing its paper and
saying where it deviates from it (and why); the class attributes (family, kind, dims) are the
registry's only source. Torch-only files copied by definition are what make an exported
model.py run the very code that trained and validated it; `standalone` is a real module for
the same reason (imported, linted and tested, not a string template).
"""
from .factory import ATTENTION, build_attention, make_attention
from .timm_layers import TimmUNet
from .unet import UNet, UNetDecoder

SOURCE_ORDER = ("layers", "tokens", "channel", "spatial", "gate", "dual", "cross", "selfattn",
                "unet", "timm_layers", "factory", "sliding", "infer", "standalone")
"""The files in an order where each comes after the siblings it imports (model.py's order)."""

__all__ = ["ATTENTION", "SOURCE_ORDER", "TimmUNet", "UNet", "UNetDecoder", "build_attention",
           "make_attention"]
