"""Export: a trained architecture as files that need nothing of nas-attn.

Where to start:

- `assemble` — `model.py` assembly and the export folder: `render_model_py`, `export_arch`,
  `export_checkpoint` (a `nas-attn train` output), `export_trained`, `load_model_py`.
- `text` — what model.py is made of besides copied source: literals of re-validated values,
  metadata, the docstring, and the safety check of the generated text (`ExportError`).
- `formats` — ONNX and TorchScript beside model.py, checked at two input sizes.
- `verify` — meta.json's hash record and the check that `load_model`, `predict` and
  `evaluate` make of an export folder (`ExportMismatchError`).

`from nas_attn.exporting import export_arch` and the other public names of `assemble` work as
before; they are imported on first use, so that reading an export's record (`verify`) does not
load the model.py generator.
"""
from __future__ import annotations

_ASSEMBLE = ("render_model_py", "export_arch", "export_checkpoint", "export_trained",
             "load_model_py", "EXPORT_FILES")
__all__ = [*_ASSEMBLE, "ExportError"]


def __getattr__(name: str):
    if name in _ASSEMBLE:
        from . import assemble

        return getattr(assemble, name)
    if name == "ExportError":
        from .values import ExportError

        return ExportError
    raise AttributeError(f"module 'nas_attn.exporting' has no attribute {name!r}")
