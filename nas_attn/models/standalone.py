"""The functions at the end of every exported model.py: `build_model`, `load`, `preprocess`,
`predict` and `run_example` (what `python model.py` runs).

A real module, so that it is imported, linted and tested like the rest of `nas_attn.models`;
`nas_attn.exporting` copies these definitions into model.py after the literals it writes for
the exported architecture. The five names below are those literals: here they are
placeholders (a plain 2D UNet) that model.py replaces with its own, and the copier never
copies them.
"""
from __future__ import annotations

import hashlib
import io
import pathlib

import torch

from .factory import make_attention
from .infer import predict_image, preprocess_image
from .unet import UNet

# ----- written by the exporter into model.py (placeholders here) --------------------------------
ARCH: dict = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "widths": [4, 8, 8],
              "block": {"convs": 2, "norm": "batch", "act": "relu", "dropout": 0.0},
              "upsample": "transpose", "sites": {}, "aux_channels": 0,
              "deep_supervision": False}
INFERENCE: dict = {"patch_size": None, "overlap": 0.5, "normalisation": "image"}
WEIGHTS_SHA256: str | None = None
NET = UNet
"""The network class: UNet, or TimmUNet for a timm encoder."""
EXAMPLE_SIZE = 64
"""The side of the random input `run_example` feeds the model."""
PLACEHOLDERS = ("ARCH", "INFERENCE", "WEIGHTS_SHA256", "NET", "EXAMPLE_SIZE", "PLACEHOLDERS")


# ----- model.py's functions ---------------------------------------------------------------------
def build_model() -> torch.nn.Module:
    """The architecture of this file with freshly initialised weights."""
    return NET(**ARCH, make_attention=make_attention)


def load(weights_path, map_location="cpu", check=True) -> torch.nn.Module:
    """The model with the exported weights (a state_dict), in eval mode. The file must be the
    one exported with this model.py (its SHA-256 is WEIGHTS_SHA256); check=False loads another
    one knowingly (it must still fit the architecture)."""
    data = pathlib.Path(weights_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if check and WEIGHTS_SHA256 is not None and digest != WEIGHTS_SHA256:
        raise ValueError(f"{weights_path}: SHA-256 {digest[:12]}... differs from the "
                         f"{WEIGHTS_SHA256[:12]}... exported with this model.py (weights of "
                         "another run?); load(path, check=False) to use it anyway")
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    model = build_model()
    model.load_state_dict(state)
    return model.eval()


def preprocess(image, channels=None, role="image"):
    """The training normalisation of one image: (C, *spatial), or (*spatial) for one channel,
    to float32 (C, *spatial), as INFERENCE['normalisation'] says: 'dataset' maps each channel
    from the training set's INFERENCE['low'] (-> 0) to INFERENCE['high'] (-> 1), clipped
    ('aux_low' / 'aux_high' with role='aux'); 'image' from the image's own low_percentile to its
    high_percentile; 'none' keeps the values. Accepts tensors and arrays."""
    return preprocess_image(image, ARCH["spatial_dims"], channels, INFERENCE, role)


def predict(image, model, *, aux=None, tta=False, output="labels", normalise=True, overlap=None,
            batch=4):
    """Segment one image: preprocess, then the model once if the image is no larger than the
    training patch (INFERENCE['patch_size']), else a sliding window with `overlap` and Gaussian
    weights; `tta=True` averages the probabilities over all flips of the spatial axes.

    image: (C, *spatial) or (*spatial), raw intensities (normalise=False: already normalised).
    aux: the auxiliary modality (C_aux, *spatial) when ARCH['aux_channels'] > 0.
    output: 'labels' -> (*spatial) int64 class ids; 'probabilities' -> (K, *spatial) softmax
    (sigmoid for K == 1); 'logits' -> (K, *spatial) (not with tta).
    Runs on the device of the model's parameters.
    """
    return predict_image(image, model, ARCH, INFERENCE, aux=aux, tta=tta, output=output,
                         normalise=normalise, overlap=overlap, batch=batch)


def run_example() -> str:
    """A freshly initialised model on a random input: its parameter count and output shape."""
    model = build_model().eval()
    x = torch.randn(1, ARCH["in_channels"], *[EXAMPLE_SIZE] * ARCH["spatial_dims"])
    aux = torch.randn(1, ARCH["aux_channels"], *x.shape[2:]) if ARCH["aux_channels"] else None
    with torch.no_grad():
        y = model(x, aux)
    return (f"{sum(p.numel() for p in model.parameters()):,} parameters; "
            f"input {tuple(x.shape)} -> logits {tuple(y.shape)}")
