"""Apply a trained model to image files: load it (export folder, checkpoint, `nas-attn train`
output), read inputs in the package's formats, predict, write masks in the input's format.

Library code (no printing); `nas_attn.cli.predict` draws the progress and the errors.

- Models: an export folder (`model.py` + `weights.pt` + `arch.json`, see `nas_attn.exporting`),
  a checkpoint (`best.pt` of `nas-attn train` or a search trial) or the folder holding it,
  or a finalize result (its recommended model); each loads as a `nas_attn.inference.trained.TrainedModel`.
  An export folder is loaded from its data only (arch.json built with the package's modules,
  weights.pt with `weights_only=True`): its model.py is never run. The patch size and overlap
  come from the export's meta.json (or model.py's INFERENCE literal, parsed) or the
  checkpoint's metadata.
- Inputs: files (PNG, JPEG, BMP, TIFF, NPY, NIfTI) or folders of them (a dataset folder's
  `images/` when it has one). Channels: an array with the model's spatial rank is one
  channel; otherwise channels first or last (or (D, C, H, W) in 3D), the axis whose size is the
  model's channel count. Normalisation and prediction: `nas_attn.models.infer` (what training uses).
- Outputs: `OUT/<stem><ext>` in the input's format: PNG for Pillow formats, TIFF, NPY, NIfTI
  with the input's affine and header (data type uint8). Class ids; binary PNG and TIFF masks
  are written as {0, 255} so they can be viewed (both read back as binary). An existing file
  is never overwritten unless `force=True`; writes are atomic.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..architecture.description import UNetArch
from ..atomic import atomic_write
from ..data import readers as R
from ..errors import DataError, DiskFullError, NasAttnError
from ..exporting.verify import ExportMismatchError, verify_export  # noqa: F401  (re-exported)
from ..models.infer import (
    labels_from_output,
    predict_logits,
)
from .compat import checkpoint_inference
from .trained import InferenceConfig, TrainedModel
from .checkpoint import find_checkpoint, load_checkpoint


class ModelLoadError(NasAttnError, ValueError):
    """A --model path that is neither an export folder nor a nas-attn checkpoint."""


class InputError(DataError):
    """One input file that cannot be segmented (the message names it)."""


def load_model(path: str | Path, device: str | torch.device | None = None, *,
               accept_mismatch: bool = False) -> TrainedModel:
    """An export folder (arch.json, weights.pt), a checkpoint, a `nas-attn train` output
    folder or a finalize result (a study's `final/` folder: its recommended model), in eval
    mode on `device` (default: the best available). An export folder whose files differ from
    the hashes its meta.json records is refused (`ExportMismatchError`) unless
    `accept_mismatch` (then a note says what differs)."""
    from ..device import select_device

    path = Path(path)
    dev = select_device(device)
    if path.is_dir() and ((path / "model.py").is_file() or (path / "arch.json").is_file()):
        model, arch, settings, notes, meta = _load_export(path, accept_mismatch)
        return TrainedModel(arch, model.to(dev).eval(), settings, str(path), "export", notes,
                            {k: v for k, v in (meta or {}).items()
                             if k not in ("inference", "verify", "format_checks")})
    ckpt = find_checkpoint(path) or _finalized_checkpoint(path)
    if ckpt is None:
        raise ModelLoadError(f"{path}: not an export folder (model.py + weights.pt), a "
                             "checkpoint file, a `nas-attn train` folder holding best.pt or a "
                             "finalize result (finalize.json)")
    arch, model, meta = load_checkpoint(ckpt, dev)
    inference, notes = checkpoint_inference(ckpt, arch, meta)
    return TrainedModel(arch, model.eval(), inference, str(ckpt), "checkpoint", notes,
                        {k: v for k, v in meta.items() if k != "inference"})


def _finalized_checkpoint(path: Path) -> Path | None:
    """The recommended model's checkpoint of a finalize result (its folder or finalize.json)."""
    import json

    doc = path / "finalize.json" if path.is_dir() else path
    if doc.name != "finalize.json" or not doc.is_file():
        return None
    try:
        rec = (json.loads(doc.read_text()).get("recommended") or {}).get("checkpoint")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{doc}: not a finalize result ({e})") from None
    if not rec or not Path(rec).is_file():
        raise ModelLoadError(f"{doc}: its recommended checkpoint {rec!r} is missing")
    return Path(rec)


def _load_export(path: Path, accept_mismatch: bool = False
                 ) -> tuple[torch.nn.Module, UNetArch, InferenceConfig, list[str], dict | None]:
    """An export folder's model, built from its data only: never by running its model.py
    (which anyone may have edited). The architecture comes from arch.json, validated like any
    architecture, and is built with the package's own modules; weights.pt is read with
    `weights_only=True` and must fit strictly; the inference settings come from meta.json, or
    as a literal read out of model.py's `INFERENCE = {...}` line (parsed, not executed)."""
    import json

    from ..errors import ArchError
    from ..exporting.values import validated_arch
    from ..architecture.builder import build_unet

    for name in ("arch.json", "weights.pt"):
        if not (path / name).is_file():
            raise ModelLoadError(f"{path}: export folder without {name}" + (
                " (it was exported from a trial without a checkpoint; export a trained model)"
                if name == "weights.pt" else " (re-export the model)"))
    try:
        arch = validated_arch(json.loads((path / "arch.json").read_text()))
    except (ArchError, ValueError, OSError) as e:
        raise ModelLoadError(f"{path / 'arch.json'}: not a valid architecture ({e})") from None
    except RecursionError:
        raise ModelLoadError(f"{path / 'arch.json'}: not a valid architecture (nested too "
                             "deeply)") from None
    from .checkpoint import safe_load

    try:
        state = safe_load(path / "weights.pt")
    except NasAttnError as e:
        raise ModelLoadError(str(e)) from None
    try:
        model = build_unet(arch)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001  (foreign, truncated or mismatched weights)
        raise ModelLoadError(f"{path / 'weights.pt'}: does not load into the architecture of "
                             f"arch.json ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                             ) from None
    # after loading: a truncated or foreign weights.pt is named as such first
    meta = _export_meta(path)
    notes = verify_export(path, arch, meta, accept_mismatch=accept_mismatch)
    raw = _export_inference(path, meta)
    if raw is None:
        return model, arch, InferenceConfig(arch.spatial_dims), notes + [
            "the export has no INFERENCE settings (an older export); every image is predicted "
            "in one pass"], meta
    try:
        settings = InferenceConfig.make(raw, arch.spatial_dims)
    except NasAttnError as e:
        raise ModelLoadError(f"{path}: its inference settings are not valid ({e})") from None
    return model, arch, settings, notes, meta


def _export_meta(path: Path) -> dict | None:
    """The export's meta.json as a dict; None when there is none."""
    import json

    meta = path / "meta.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"{meta}: not valid JSON ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{meta}: must hold a JSON object, not {type(doc).__name__}")
    return doc


def _export_inference(path: Path, meta: dict | None) -> dict | None:
    """meta.json's "inference", else the literal of model.py's `INFERENCE = ...` line."""
    import ast

    if meta is not None and isinstance(meta.get("inference"), dict):
        return meta["inference"]
    code = path / "model.py"
    if not code.is_file():
        return None
    try:
        tree = ast.parse(code.read_text())
    except (OSError, SyntaxError, ValueError) as e:
        raise ModelLoadError(f"{code}: cannot be read for its INFERENCE settings ({e})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "INFERENCE"
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise ModelLoadError(f"{code}: INFERENCE is not a plain literal") from None
            return value if isinstance(value, dict) else None
    return None


# ----- inputs -----------------------------------------------------------------------------
def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Files to segment and problems (missing paths, folders without images), in order.
    A folder gives its supported files (its `images/` folder's, for a dataset folder)."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            d = p / "images" if (p / "images").is_dir() else p
            found = sorted(f for f in d.iterdir() if f.is_file() and R.split_name(f.name)
                           and not f.name.startswith("."))
            if not found:
                problems.append(f"{p}: no image files (accepted: "
                                f"{', '.join(R.SUPPORTED_EXT)})")
            files.extend(found)
        elif p.is_file():
            if R.split_name(p.name) is None:
                problems.append(f"{p}: unsupported file type (accepted: "
                                f"{', '.join(R.SUPPORTED_EXT)})")
            else:
                files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


def image_channels_first(arr: np.ndarray, channels: int, spatial_dims: int, name: str
                         ) -> np.ndarray:
    """(C, *spatial) view of an input image for a model with `channels` input channels, or
    InputError naming the file (the channel rule is in the module docstring)."""
    a = arr
    while a.ndim > spatial_dims + 1 and a.shape[0] == 1:
        a = a[0]
    while a.ndim > spatial_dims + 1 and a.shape[-1] == 1:
        a = a[..., 0]
    want = "H×W" if spatial_dims == 2 else "D×H×W"
    if a.ndim == spatial_dims:
        if channels == 1:
            return a[None]
        raise InputError(f"{name}: 1 channel ({R.fmt_shape(arr.shape)}), but the model takes "
                         f"{channels} channels ({channels}×{want} or {want}×{channels})")
    if a.ndim == spatial_dims + 1:
        axes = [0, a.ndim - 1] + ([1] if spatial_dims == 3 else [])
        for ax in axes:
            if a.shape[ax] == channels:
                return np.moveaxis(a, ax, 0)
        if spatial_dims == 2 and channels == 1 and min(a.shape) > 4:
            raise InputError(f"{name}: shape {R.fmt_shape(arr.shape)} looks 3D, but the model "
                             f"is 2D and takes one channel ({want})")
        raise InputError(f"{name}: shape {R.fmt_shape(arr.shape)} has no axis of {channels} "
                         f"channel{'s' if channels > 1 else ''}; the model takes "
                         f"{channels}×{want} or {want}×{channels}")
    if a.ndim < spatial_dims:
        raise InputError(f"{name}: shape {R.fmt_shape(arr.shape)} is {a.ndim}D, but the model "
                         f"is {spatial_dims}D ({want}, with {channels} channel"
                         f"{'s' if channels > 1 else ''})")
    raise InputError(f"{name}: shape {R.fmt_shape(arr.shape)} has too many axes for a "
                     f"{spatial_dims}D model with {channels} channel{'s' if channels > 1 else ''}"
                     f" ({want})")


def read_image(path: Path, arch: UNetArch) -> np.ndarray:
    """The raw (C, *spatial) image in `path` for `arch`, or InputError naming the file."""
    try:
        arr = np.asarray(R.read_array(path, "image"))
    except Exception as e:  # noqa: BLE001  (any decoder failure is this file's problem)
        raise InputError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: unsupported data type {arr.dtype} (accepted: integer or "
                         "floating-point intensities)")
    if R.file_kind(path) == "nifti" and arch.spatial_dims == 2:
        raise InputError(f"{path}: a NIfTI volume, but the model is 2D")
    return image_channels_first(arr, arch.in_channels, arch.spatial_dims, str(path))


# ----- outputs ----------------------------------------------------------------------------
def check_out_dir(files: list[Path], out_dir: Path,
                  inputs: list[str | Path] = ()) -> None:
    """Refuse (InputError, one line) an --out that is an existing file, one whose masks would
    land on an input image, or the `masks/` folder of an input dataset folder: these are the
    user's data, and `--force` only allows replacing earlier masks."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is an existing file, not a folder; name a folder "
                         "for the masks")
    target = out_dir.resolve()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir() and (p / "images").is_dir() and (p / "masks").resolve() == target:
            raise InputError(f"--out {out_dir}: is the masks/ folder of the input data set "
                             f"{p} (its ground truth); name another folder")
    sources = {f.resolve(): f for f in files}
    for f in files:
        dest = output_path(f, out_dir).resolve()
        if dest in sources:
            raise InputError(f"--out {out_dir}: the mask of {f} would replace the input image "
                             f"{sources[dest]}; name a folder that holds no input images "
                             "(--force does not allow this)")


def output_path(path: Path, out_dir: Path) -> Path:
    """Where the mask of input `path` goes: same stem, same format (PNG for JPEG / BMP)."""
    stem, ext = R.split_name(path.name)  # type: ignore[misc]
    if ext in R.IMAGE_2D_EXT:
        ext = ".png"
    return Path(out_dir) / f"{stem}{ext}"


def encode_mask(labels: np.ndarray, source: Path, dest: Path, *, binary: bool) -> bytes:
    """The file bytes of a label map in the format of `dest`'s extension (NIfTI: with the
    affine and header of `source`)."""
    ids = labels.astype(np.uint8)
    ext = R.split_name(dest.name)[1]  # type: ignore[index]
    buf = io.BytesIO()
    if ext == ".png":
        from PIL import Image

        Image.fromarray(ids * 255 if binary else ids).save(buf, format="PNG")
    elif ext in R.TIFF_EXT:
        import tifffile

        tifffile.imwrite(buf, ids * 255 if binary else ids)
    elif ext in R.NPY_EXT:
        np.save(buf, ids, allow_pickle=False)
    else:  # NIfTI: the input's affine and header, uint8 data
        import nibabel as nib

        ref = nib.load(str(source))
        header = ref.header.copy()
        img = nib.Nifti1Image(ids, ref.affine, header)
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1.0, 0.0)
        raw = img.to_bytes()
        return gzip.compress(raw, mtime=0) if ext == ".nii.gz" else raw
    return buf.getvalue()


@dataclass
class PredictOutcome:
    """One input: where its mask went, or why it failed."""

    source: Path
    output: Path | None = None
    error: str | None = None
    shape: tuple[int, ...] | None = None
    note: str | None = None
    """Something the mask depends on that the user should know (NaN/inf pixels)."""


def non_finite_note(source, image: np.ndarray) -> str | None:
    """A note for an image with NaN/inf pixels (read as the channel's lowest intensity, as in
    training and `data check`), or None."""
    n_bad, _ = R.non_finite(np.asarray(image))
    if not n_bad:
        return None
    return (f"{Path(source).name}: {n_bad} NaN/inf pixel(s) of {np.asarray(image).size}, read as "
            "the channel's lowest intensity; the mask there is the model's guess")


def predict_array(loaded: TrainedModel, image: np.ndarray, *, tta: bool = False,
                  batch: int = 4, aux: np.ndarray | None = None,
                  spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Label map (*spatial) int64 of a raw (C, *spatial) image (normalised here, as in
    training). With the image's `spacing` (mm) and a model trained at another one, the image
    is resampled to the model's spacing, and the class scores back to the image's grid before
    the arg max (`nas_attn.data.resample`), so the mask lies on the input's grid."""
    from ..data import resample as RS

    image = np.asarray(image)  # a cached case is read here
    aux = None if aux is None else np.asarray(aux)
    shape = tuple(image.shape[1:])
    target = loaded.spacing
    resample = target is not None and spacing is not None and not RS.close(spacing, target)
    if resample:
        image = RS.resample_image(image, spacing, target)
        aux = None if aux is None else RS.resample_image(aux, spacing, target)
    x = loaded.normalise(image)
    a = None if aux is None else loaded.normalise(aux, "aux")
    out, is_probs = predict_logits(loaded.model, x, patch_size=loaded.patch_size,
                                   overlap=loaded.overlap, aux=a, tta=tta, batch=batch)
    if resample:
        out = RS.scores_to_shape(out, shape)
    return labels_from_output(out, is_probs).cpu().numpy()[0]


def predict_normalised(loaded: TrainedModel, x: torch.Tensor, *, aux: torch.Tensor | None = None,
                       tta: bool = False, batch: int = 4) -> np.ndarray:
    """(B, *spatial) labels of an already normalised (B, C, *spatial) batch on the device."""
    out, is_probs = predict_logits(loaded.model, x, patch_size=loaded.patch_size,
                                   overlap=loaded.overlap, aux=aux, tta=tta, batch=batch)
    return labels_from_output(out, is_probs).cpu().numpy()


def predict_files(loaded: TrainedModel, files: list[Path], out_dir: Path, *, tta: bool = False,
                  force: bool = False, batch: int = 4) -> Iterator[PredictOutcome]:
    """Segment each file and write its mask (see the module docstring); yields one outcome per
    file, errors included (a bad file does not stop the others; a full disk raises
    `DiskFullError`)."""
    if loaded.arch.aux_channels:
        raise ModelLoadError(f"{loaded.source}: this model also takes an auxiliary modality "
                             f"({loaded.arch.aux_channels} channels); `predict` segments single "
                             "images, use `evaluate` on a folder with aux/ or model.py's "
                             "predict(image, model, aux=...)")
    out_dir = Path(out_dir)
    check_out_dir(files, out_dir)
    taken: dict[Path, Path] = {}
    binary = loaded.arch.classes == 2
    for f in files:
        res = PredictOutcome(f)
        dest = output_path(f, out_dir)
        try:
            if dest in taken:
                raise InputError(f"{f}: its mask {dest.name} would overwrite the mask of "
                                 f"{taken[dest]} (two inputs with one name)")
            if dest.exists() and not force:
                raise InputError(f"{f}: {dest} exists (pass --force to overwrite it)")
            taken[dest] = f
            image = read_image(f, loaded.arch)
            res.note = non_finite_note(f, image)
            labels = predict_array(loaded, image, tta=tta, batch=batch,
                                   spacing=R.read_spacing(f, loaded.arch.spatial_dims))
            atomic_write(dest, encode_mask(labels, f, dest, binary=binary))
            res.output, res.shape = dest, tuple(labels.shape)
        except InputError as e:
            res.error = str(e)
        except DiskFullError:
            raise  # every file after it would fail the same way
        except (RuntimeError, ValueError, OSError) as e:  # model/IO failure on this one file
            res.error = f"{f}: {type(e).__name__}: {e}"
        yield res
