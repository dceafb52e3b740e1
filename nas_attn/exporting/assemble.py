"""Export one architecture as a standalone PyTorch file (`model.py`) plus its weights.

`render_model_py(arch)` copies whole definitions out of `nas_attn.models` (torch only, written to
be copied: top-level names unique across its files, no registration decorators): the classes
the architecture uses, the UNet, `make_attention`, and what `preprocess` / `predict` need (the
training normalisation, sliding window and TTA of `models/infer.py`), each with the definitions
it refers to and nothing else, in the files' order. Nothing is renamed or rewritten. Then come
the literals of this export (`ARCH`, the architecture's `unet_kwargs`; `META`; `INFERENCE`, the
training patch size and normalisation; `ATTENTION`, the used classes) and a short tail
(`build_model`, `load`, `preprocess`, `predict`). A timm attention layer or a timm encoder brings
its class from `models/timm_layers.py`, which imports timm in its constructor; the docstring
then says timm is needed. The output does not depend on any formatter on PATH.

Safety (`nas_attn.exporting.text`): the code is the package's own source files plus literals of
re-validated values; study metadata is sanitised text; the result is checked before it is
written (`check_generated`).

`export_arch(arch, out_dir)` writes `model.py`, `arch.json`, `meta.json` (with the hashes that
make the folder verify itself, `nas_attn.exporting.verify`),
`weights.pt` (a state_dict, loadable with `torch.load(..., weights_only=True)`), and optionally
`model.ts` / `model.onnx` (`nas_attn.exporting.formats`). `export_checkpoint` exports a
`nas-attn train` output; `nas_attn.searching.trial_export.export_trial` a trial of a study.
"""
from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import models
from ..models import standalone
from ..inference.trained import InferenceConfig, TrainedModel
from ..architecture.description import UNetArch
from ..atomic import AtomicGroup
from ..errors import NasAttnError
from .formats import FORMATS, example_inputs, export_onnx, export_torchscript, onnx_missing
from .text import (BASE_IMPORTS, ExportError, arch_literal,
                          check_generated, docstring, lit, meta_literal, sanitize_meta, sanitize_text,
                          validated_arch)
from .verify import provenance
from ..paths import claim_output_dir, record_outputs, sha256_file
from ..architecture.builder import timm_kwargs, unet_kwargs

__all__ = ["ExportError", "export_arch", "export_checkpoint", "export_trained",
           "load_model_py", "render_model_py"]

_ROOTS = ("make_attention", "build_model", "load", "preprocess", "predict", "run_example")
"""model.py's public functions (`nas_attn.models.standalone`) and what they need."""
_WRITTEN_HERE = {"ATTENTION", *standalone.PLACEHOLDERS}
"""Written by `render_model_py` itself: the used classes' table and the literals of the export."""


# ----- the copyable definitions of nas_attn.models -------------------------------------------
@dataclass(frozen=True)
class _Def:
    file: str
    order: tuple[int, int]
    text: str
    refs: frozenset[str]


def _names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


@functools.lru_cache(maxsize=1)
def _sources() -> tuple[dict[str, _Def], dict[str, list[str]]]:
    """Top-level definitions of every file of `nas_attn.models` (name -> definition) and each
    file's module-level import statements."""
    defs: dict[str, _Def] = {}
    imports: dict[str, list[str]] = {}
    root = Path(models.__file__).parent
    for rank, stem in enumerate(models.SOURCE_ORDER):
        lines = (root / f"{stem}.py").read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        imports[stem] = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                         and not getattr(n, "level", 0) and getattr(n, "module", "") != "__future__"]
        for node in tree.body:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            while start > 1 and lines[start - 2].lstrip().startswith("#"):
                start -= 1  # keep the comment block right above the definition
            refs = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            for name in _names(node):
                if name in defs:
                    raise ExportError(f"{name} is defined in models/{defs[name].file}.py and "
                                      f"models/{stem}.py; model.py needs one definition")
                defs[name] = _Def(stem, (rank, node.lineno),
                                  "\n".join(lines[start - 1:node.end_lineno]), refs)
    return defs, imports


def _copied(roots: Sequence[str]) -> tuple[list[_Def], list[str]]:
    """The definitions `roots` need (in the files' order) and the import lines of their files."""
    defs, imports = _sources()
    need: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in need or name in _WRITTEN_HERE:
            continue
        need.add(name)
        todo += [r for r in defs[name].refs if r in defs and r not in need]
    chosen = sorted({defs[n] for n in need}, key=lambda d: d.order)
    lines: list[str] = []
    for stem in models.SOURCE_ORDER:
        if any(d.file == stem for d in chosen):
            lines += [line for line in imports[stem] if line not in lines]
    # the standard library first, then torch (the files import nothing else at the top)
    return chosen, sorted(lines, key=lambda line: line.split()[1].split(".")[0] == "torch")


def render_model_py(arch: UNetArch, *, meta: dict | None = None, example_size: int | None = None,
                    inference: Mapping[str, Any] | None = None,
                    weights_sha256: str | None = None) -> str:
    """The source of a standalone `model.py` for `arch` (see the module docstring).

    `inference` (an `InferenceConfig` or its dict): the patch size and normalisation `predict` uses;
    default: no patch size (one pass on every image), the training normalisation.
    `weights_sha256`: the SHA-256 of the exported weights.pt, which `load()` checks."""
    if weights_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", weights_sha256):
        raise ExportError(f"weights_sha256 {weights_sha256[:80]!r} is not a SHA-256 hex digest")
    arch = validated_arch(arch)
    meta = sanitize_meta(meta)
    used = {name: models.ATTENTION[name] for name in arch.attention_names()}
    timm_encoder = arch.encoder_name.startswith("timm:")
    net = models.TimmUNet if timm_encoder else models.UNet
    kw = timm_kwargs(arch) if timm_encoder else unet_kwargs(arch)
    chosen, imports = _copied([net.__name__, *_ROOTS, *(cls.__name__ for cls in used.values())])
    uses_timm = any(d.file == "timm_layers" for d in chosen)
    blocks, current = [], None
    for d in chosen:
        if d.file == "standalone":
            continue  # after the literals they read
        head = "" if d.file == current else f"# {'-' * 8} from nas_attn/models/{d.file}.py {'-' * 8}\n"
        current = d.file
        blocks.append(head + d.text)
    tail = [d.text for d in chosen if d.file == "standalone"]
    # validated again: only numbers and known names reach the file
    settings = InferenceConfig.make(inference, arch.spatial_dims, error=ExportError).to_dict(
        class_names=False)
    for key, channels in (("low", arch.in_channels), ("aux_low", arch.aux_channels)):
        if key in settings and len(settings[key]) != channels:
            raise ExportError(f"the normalisation has {len(settings[key])} {key!r} values for "
                              f"{channels} channels")
    size = int(example_size or (64 if arch.spatial_dims == 2 else 32))
    parts = [
        f'"""{docstring(arch, meta, uses_timm)}\n"""',
        "\n".join(["from __future__ import annotations", "", *imports]) + "\n\n"
        f"__all__ = ['ARCH', 'INFERENCE', 'META', {net.__name__!r}, 'build_model', 'load', "
        "'make_attention', 'predict', 'preprocess']",
        "\n\n\n".join(blocks),
        "# " + "=" * 96 + "\n# the exported architecture\n# " + "=" * 96,
        arch_literal(kw),
        f"META = {meta_literal(meta)}",
        f"WEIGHTS_SHA256 = {weights_sha256!r}",
        f"INFERENCE = {lit(settings, 'inference')}",
        "ATTENTION = {" + "".join(f"\n    {n!r}: {c.__name__}," for n, c in used.items())
        + ("\n" if used else "") + "}",
        f"NET = {net.__name__}",
        f"EXAMPLE_SIZE = {size}",
        "# " + "=" * 96 + "\n# from nas_attn/models/standalone.py\n# " + "=" * 96,
        *tail,
        'if __name__ == "__main__":\n    print(run_example())',
    ]
    code = "\n\n\n".join(parts) + "\n"
    check_generated(code, allowed_imports=BASE_IMPORTS + (("timm",) if uses_timm else ()))
    return code


# ----- files ----------------------------------------------------------------------------------
def _state_dict(weights: Path | str | Mapping, arch: UNetArch) -> dict:
    import torch

    from ..architecture.builder import build_unet

    if isinstance(weights, (str, Path)):
        from ..inference.checkpoint import safe_load

        try:
            obj = safe_load(weights)
        except NasAttnError as e:
            raise ExportError(str(e)) from None
    else:
        obj = weights
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError("weights must be a state_dict (a mapping of names to tensors), or a "
                          "checkpoint holding one under 'state_dict' or 'model'")
    model = build_unet(arch)
    try:
        model.load_state_dict({str(k): v for k, v in obj.items()}, strict=True)
    except RuntimeError as e:
        raise ExportError(f"weights do not match the architecture: {e}") from None
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def load_model_py(path: Path | str, module_name: str | None = None):
    """Import a generated model.py from its path into a fresh module (not put in sys.modules)."""
    path = Path(path)
    name = module_name or f"nas_attn_exported_{abs(hash(str(path.resolve()))):x}"
    # an explicit loader: an export's model.py is imported from its temporary name (any suffix)
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.SourceFileLoader(name, str(path)))
    if spec is None or spec.loader is None:
        raise ExportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export_formats(arch: UNetArch, formats: tuple[str, ...], size: tuple[int, ...], state,
                    group: AtomicGroup, files: dict[str, Path], staged: dict[str, Path],
                    out_dir: Path) -> dict[str, dict]:
    """TorchScript and ONNX of the staged model.py's network (traced at `size`), staged in
    `group`; each format's check against eager torch (sizes, largest difference)."""
    model = load_model_py(staged["model.py"]).build_model()
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    inputs = example_inputs(arch, size)
    checks: dict[str, dict] = {}
    if "torchscript" in formats:
        files["torchscript"] = out_dir / "model.ts"
        staged["model.ts"] = group.stage(files["torchscript"])
        checks["torchscript"] = export_torchscript(model, inputs, staged["model.ts"], arch.depth)
    if "onnx" in formats:
        files["onnx"] = out_dir / "model.onnx"
        staged["model.onnx"] = group.stage(files["onnx"])
        checks["onnx"] = export_onnx(model, inputs, staged["model.onnx"], arch)
    return checks


def _trace_size(arch: UNetArch, input_size: Sequence[int] | None) -> tuple[int, ...]:
    """The example input's spatial size (default 64² in 2D, 32³ in 3D), checked."""
    size = tuple(int(s) for s in input_size) if input_size else \
        (64,) * 2 if arch.spatial_dims == 2 else (32,) * 3
    if len(size) != arch.spatial_dims or any(s < 1 for s in size):
        raise ExportError(f"input_size {size} must have {arch.spatial_dims} positive entries")
    return size


def export_arch(arch: UNetArch, out_dir: Path, *, weights: Path | dict | None = None,
                meta: dict | None = None, formats: tuple[str, ...] = (),
                input_size: Sequence[int] | None = None,
                inference: Mapping[str, Any] | None = None, force: bool = False) -> dict[str, Path]:
    """Write model.py, arch.json, weights.pt (with weights), the asked formats ("onnx" ->
    model.onnx, "torchscript" -> model.ts) and meta.json into out_dir, which must be new, empty
    or an earlier export unless `force` (`paths.claim_output_dir`). meta.json holds `meta`, the
    inference settings and the "verify" record (versions, architecture hash, every file's
    SHA-256: `nas_attn.exporting.verify`); model.py's `load()` checks the weights' hash.

    `inference` (an `InferenceConfig` or its dict) becomes model.py's INFERENCE and meta.json's
    "inference". `weights`: a state_dict, or the path of one (or of a checkpoint holding one
    under 'state_dict' / 'model'); it must load strictly into `build_unet(arch)`. TorchScript and
    ONNX are traced at `input_size` (default 64² in 2D, 32³ in 3D) and take any size; each is
    checked against torch at three sizes (recorded in meta.json's "format_checks"). Returns the
    paths written, under the keys "model", "arch", "meta", "weights", "onnx", "torchscript".
    """
    import torch

    arch = validated_arch(arch)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown export formats {bad}; accepted: {', '.join(FORMATS)}")
    size = _trace_size(arch, input_size)
    if "onnx" in formats and onnx_missing():  # fail before writing anything
        raise ExportError(onnx_missing())
    state = _state_dict(weights, arch) if weights is not None else None
    settings = InferenceConfig.make(inference, arch.spatial_dims, error=ExportError)
    code = render_model_py(arch, meta=meta, example_size=size[0], inference=settings)
    out_dir = claim_output_dir(out_dir, "export", force=force)  # only once all is valid
    # every file is written under a temporary name and renamed only when all are: a failure (a
    # full disk) leaves an earlier export in this folder whole, never half replaced
    with AtomicGroup() as group:
        files = {"model": out_dir / "model.py", "arch": out_dir / "arch.json",
                 "meta": out_dir / "meta.json"}
        staged: dict[str, Path] = {}
        checks: dict[str, dict] = {}
        if state is not None:  # first: model.py records the hash of these very bytes
            files["weights"] = out_dir / "weights.pt"
            with group.file(files["weights"]) as f:
                torch.save(state, f)
            staged["weights.pt"] = Path(f.name)
            code = render_model_py(arch, meta=meta, example_size=size[0], inference=settings,
                                   weights_sha256=sha256_file(staged["weights.pt"]))
        staged["model.py"] = group.write(files["model"], code)  # what `formats` import
        group.write(files["arch"], arch.to_json(indent=2) + "\n")
        if formats:
            checks = _export_formats(arch, formats, size, state, group, files, staged, out_dir)
        # last: the record of every file above (`nas_attn.exporting.verify`)
        doc = sanitize_meta(meta)
        doc["inference"] = settings.to_dict()
        if checks:  # each format against eager torch: the sizes and the largest difference
            doc["format_checks"] = checks
        doc["verify"] = provenance(arch, {n: sha256_file(p) for n, p in staged.items()})
        group.write(files["meta"], json.dumps(doc, indent=2) + "\n")
    _remove_stale(out_dir, files)
    record_outputs(out_dir, "export", files.values())
    return files


# every file an export may write: one left from an earlier export into the same folder that this
# one did not rewrite (its weights, an ONNX file) would belong to another model
EXPORT_FILES = ("model.py", "arch.json", "meta.json", "weights.pt", "model.ts", "model.onnx")


def _remove_stale(out_dir: Path, written: Mapping[str, Path]) -> None:
    keep = {p.name for p in written.values()}
    for name in EXPORT_FILES:
        if name not in keep and (out_dir / name).is_file():
            (out_dir / name).unlink()


def export_checkpoint(path: Path | str, out_dir: Path | None = None, *,
                      formats: tuple[str, ...] = (), runs_dir: Path = Path("runs"),
                      input_size: Sequence[int] | None = None, force: bool = False):
    """Export a `nas-attn train` output (its folder or its best.pt) or any nas-attn checkpoint:
    model.py with its patch size and normalisation, arch.json, meta.json, weights.pt.
    Returns (paths written, architecture)."""
    from ..inference.compat import checkpoint_inference
    from ..inference.checkpoint import find_checkpoint, read_checkpoint

    path = Path(path)
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise ExportError(f"{path}: not a checkpoint file or a `nas-attn train` folder holding "
                          "best.pt")
    obj = read_checkpoint(ckpt)
    arch = UNetArch.from_json(obj["arch"])
    ckpt_meta = dict(obj.get("meta") or {})
    inference, _ = checkpoint_inference(ckpt, arch, ckpt_meta)
    meta = {"score_dice": (ckpt_meta.get("metrics") or {}).get("dice"),
            "score_metric": "validation Dice per class, pooled over the split",
            "epoch": ckpt_meta.get("epoch"), "checkpoint": str(ckpt)}
    name = ckpt.parent.name if ckpt.name == "best.pt" else ckpt.stem
    out = Path(out_dir) if out_dir else Path(runs_dir) / "export" / \
        (sanitize_text(name, 48).replace(" ", "_") or "model")
    files = export_arch(arch, out, weights=obj["state_dict"], meta=meta, formats=formats,
                        input_size=input_size,
                        inference=inference, force=force)
    return files, arch


def export_trained(trained: TrainedModel, out_dir: Path, *, meta: dict | None = None,
                   formats: tuple[str, ...] = (), input_size: Sequence[int] | None = None,
                   force: bool = False) -> dict[str, Path]:
    """`export_arch` of a `TrainedModel`: its architecture, weights and inference settings,
    with its provenance's score and epoch in meta.json (`meta` adds to them)."""
    prov = trained.provenance or {}
    info = {"score_dice": prov.get("score_dice", (prov.get("metrics") or {}).get("dice")),
            "score_metric": "validation Dice per class, pooled over the split",
            "epoch": prov.get("epoch"), **(meta or {})}
    if trained.source:
        info.setdefault("checkpoint", trained.source)
    return export_arch(trained.arch, out_dir, weights=trained.model.state_dict(), meta=info,
                       formats=formats, input_size=input_size, inference=trained.inference,
                       force=force)
