"""The text of a model.py that does not come from the package's sources, and the final check.

Everything here keeps one promise: no text from a study database (which can be edited by hand)
becomes code. Literals (`lit`) are built only from ints, finite floats, bools, None and strings
matching `SAFE_STR` (registry names, fixed vocabularies, option values); metadata strings are
reduced to a whitelist of characters with no quotes, backslashes or newlines
(`sanitize_text`) before they reach the docstring or `META`; and `check_generated` parses the
assembled file again and rejects it if it imports anything but torch, the standard library
modules the copied code uses (and timm where asked) or calls eval/exec/compile/__import__/open
or touches os/sys/subprocess.
"""
from __future__ import annotations

import ast
import json
import math
import numbers
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..version import __version__
from ..errors import NasAttnError  # noqa: F401
from .values import SAFE_STR, SITE, ExportError, lit, validated_arch  # noqa: F401

if TYPE_CHECKING:
    from ..architecture.description import UNetArch


_META_CHARS = re.compile(r"[^A-Za-z0-9 _\-\.:/@+=,;()\[\]%~#*]")
# the standard library modules copied code may import (the sliding window uses "functools",
# "itertools", "collections"; load() hashes the weights file with the last three)
STDLIB = ("math", "typing", "functools", "itertools", "collections", "hashlib", "io", "pathlib")
BASE_IMPORTS = ("torch",) + STDLIB
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "globals", "locals",
                    "breakpoint", "input"}
_FORBIDDEN_METHODS = {"system", "popen", "spawnv", "spawnl", "execv", "execl", "execve",
                      "__import__", "import_module", "check_output", "Popen"}
_FORBIDDEN_NAMES = {"os", "sys", "subprocess", "shutil", "importlib", "builtins", "socket"}


def sanitize_text(s: Any, limit: int = 160, *, keep_spaces: bool = False) -> str:
    """Inert text for a docstring: a whitelist of characters (no quotes, backslashes, newlines,
    non-ASCII), at most `limit` characters, with user:password@ in URLs masked."""
    s = re.sub(r"\s", " ", str(s)) if keep_spaces else re.sub(r"\s+", " ", str(s)).strip()
    s = re.sub(r"//[^/@\s]*@", "//***@", s)  # user:password@ in a storage URL
    s = _META_CHARS.sub("", s)
    if not keep_spaces:
        s = re.sub(r" +", " ", s).strip()
    return s[:limit] + ("..." if len(s) > limit else "")


def _meta_value(v: Any) -> Any:
    """A number, a sanitised string, or a flat mapping of those."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return f if math.isfinite(f) else sanitize_text(repr(f))
    if isinstance(v, Mapping):
        out = {}
        for k, x in list(v.items())[:32]:
            key = sanitize_text(k, 48).replace(" ", "_") or "_"
            out[key] = _meta_value(x) if not isinstance(x, Mapping) else sanitize_text(json.dumps(
                x, default=str))
        return out
    if isinstance(v, (list, tuple)):
        return sanitize_text(", ".join(str(_meta_value(x)) for x in list(v)[:16]))
    return sanitize_text(v)


def sanitize_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Meta reduced to numbers, bools, None and inert strings (keys too): a mapping whose values
    are scalars or flat mappings of scalars (deeper levels become inert strings)."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ExportError("meta must be a mapping (score, cost, source), got "
                          f"{type(meta).__name__}")
    out: dict[str, Any] = {}
    for k, v in list(meta.items())[:32]:
        out[sanitize_text(k, 48).replace(" ", "_") or "_"] = _meta_value(v)
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# the labels of the meta keys real callers pass (search trials, export_trial, export_checkpoint)
META_LABELS = {
    "score_dice": "Score (validation Dice)", "score_dice_ci95": "Its 95 % interval",
    "score_dice_ci95_counts": "The interval counts",
    "score_test_dice": "Score (test Dice)", "score_test_dice_ci95": "Its 95 % interval (test)",
    "score_metric": "Metric", "params": "Parameters", "flops": "FLOPs (forward, one patch)",
    "latency_ms": "Latency (ms)", "activation_mb": "Activation memory (MB)", "study": "Study",
    "trial": "Trial", "state": "State", "epoch": "Epoch", "checkpoint": "Checkpoint",
    "candidate": "Candidate", "attention_verdict": "Attention vs the same-size plain UNet",
    "gain_over_same_size_plain_val": "Gain over the same-size plain UNet (val Dice)",
    "gain_over_same_size_plain_test": "Gain over the same-size plain UNet (test Dice)",
    "attention_verdict_on": "The verdict was decided on",
    "weights_note": "Weights",
}


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    order = [k for k in META_LABELS if k in meta] + [k for k in meta if k not in META_LABELS]
    lines = []
    for k in order:
        v = meta[k]
        label = META_LABELS.get(k, k)
        if isinstance(v, Mapping):
            body = ", ".join(f"{kk} {_fmt_value(vv)}" for kk, vv in v.items())  # no quotes
        else:
            body = _fmt_value(v)
        lines.append(f"{label}: {body}" if body else f"{label}: -")
    return lines


def meta_literal(meta: Mapping[str, Any]) -> str:
    """META as a literal: keys and strings are sanitised text (no quotes, backslashes), via repr."""
    def as_lit(v):
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{str(k)!r}: {as_lit(x)}" for k, x in v.items()) + "}"
        if isinstance(v, str):
            return repr(sanitize_text(v))
        return lit(v, "meta")

    return as_lit(meta)


def arch_literal(kw: Mapping[str, Any]) -> str:
    """`ARCH = {...}`: the `unet_kwargs` of a validated architecture, as literals."""
    lines = ["ARCH = {"]
    for k, v in kw.items():
        if not SAFE_STR.match(k):
            raise ExportError(f"unet argument {k!r} is not exportable")
        if k == "sites":
            lines.append(f"    {k!r}: {{")
            for site, (name, opts) in v.items():
                if not SITE.match(site):
                    raise ExportError(f"site {site!r} is not exportable")
                lines.append(f"        {site!r}: ({lit(name, site)}, {lit(dict(opts), site)}),")
            lines.append("    },")
        else:
            lines.append(f"    {k!r}: {lit(v, k)},")
    lines.append("}")
    return "\n".join(lines)


def _usage_lines(arch: UNetArch) -> list[str]:
    """The docstring's usage examples, with this architecture's channels and dimensions."""
    dims = arch.spatial_dims
    spatial = "H, W" if dims == 2 else "D, H, W"
    example = "64, 64" if dims == 2 else "32, 32, 32"
    lines: list[str] = []
    aux = ""
    if arch.aux_channels:
        aux = f"aux = torch.randn(1, {arch.aux_channels}, {example})  # auxiliary modality"
    lines += [
        "",
        "Usage:",
        "    import torch",
        "    from model import build_model, load  # or importlib from this file's path",
        "",
        "    model = load('weights.pt')  # exported state_dict; build_model() for fresh weights",
        f"    x = torch.randn(1, {arch.in_channels}, {example})  # (N, C, {spatial}); any size",
    ]
    if aux:
        lines += ["    " + aux, "    logits = model(x, aux)"]
    else:
        lines += ["    logits = model(x)"]
    act = "sigmoid (binary)" if arch.out_channels == 1 else "softmax over classes"
    lines += [
        f"    # logits: (N, {arch.out_channels}, {spatial}); probabilities by {act}",
    ]
    if arch.deep_supervision:
        lines += ["    # model.forward_all(x) returns [logits, deep-supervision logits (coarser)]"]
    aux_arg = ", aux=aux_image" if arch.aux_channels else ""
    lines += [
        "",
        "Segment a new image (raw intensities, channels first; any size):",
        "    from model import load, predict, preprocess",
        "",
        "    model = load('weights.pt')",
        f"    x = preprocess(image)  # ({arch.in_channels}, {spatial}) float32, exactly the "
        "training",
        "    # normalisation (INFERENCE['normalisation']: the training set's per-channel",
        "    # intensity range or each image's own percentiles, to [0, 1]; or none)",
        f"    labels = predict(image, model{aux_arg})  # ({spatial}) int64 class ids",
        f"    probs = predict(image, model{aux_arg}, output='probabilities', tta=True)",
        "    # predict() preprocesses, then runs a sliding window (INFERENCE: patch size,",
        "    # overlap, Gaussian weights) on images larger than the training patch;",
        "    # tta=True averages all flips (not for lateralised left/right classes).",
        "    # Give volumes at INFERENCE['spacing'] (mm, where training knew one): this file",
        "    # does not resample; `nas-attn predict` does, and maps masks back.",
    ]
    return lines


def docstring(arch: UNetArch, meta: Mapping[str, Any], uses_timm: bool) -> str:
    """model.py's module docstring: what it is, what it needs, the architecture, the export's
    metadata and how to use it (only sanitised text: no quotes or backslashes)."""
    from ..architecture import registry

    dims = arch.spatial_dims
    lines = [
        f"Standalone {dims}D attention UNet exported by nas-attn {__version__}.",
        "",
        f"Needs only {'torch and timm' if uses_timm else 'torch'}, not nas_attn. Generated "
        "code: edit the search, not this file.",
    ]
    if uses_timm:
        import timm

        what = " and ".join(w for w, used in (
            ("its encoder", arch.encoder_name != "unet"),
            ("some attention layers", any(s.name and registry.get_info(s.name).family == "timm"
                                          for _, s in arch.sites()))) if used)
        version = sanitize_text(getattr(timm, "__version__", "?"), 20)
        lines += [
            f"timm: {what} come from timm (exported with timm {version}); another timm version",
            "may build different layers, and then the weights will not load.",
        ]
    lines += ["", "Architecture:"] + ["    " + sanitize_text(l, 200, keep_spaces=True) for l in
                                      arch.describe().splitlines()]
    if meta:
        lines += [""] + _meta_lines(meta)
    lines += _usage_lines(arch)
    text = "\n".join(l.rstrip() for l in lines)
    if '"' in text or "\\" in text:  # cannot happen with sanitised parts; never emit it anyway
        raise ExportError("internal error: docstring text contains quotes or backslashes")
    return text



def check_generated(code: str, *, allowed_imports: Iterable[str] = BASE_IMPORTS) -> None:
    """Raise ExportError unless `code` compiles, imports only the allowed modules and makes no
    call that could reach the system (eval, exec, __import__, open, os.*, ...)."""
    allowed = set(allowed_imports) | {"__future__"}
    try:
        tree = ast.parse(code)
        compile(tree, "model.py", "exec")
    except SyntaxError as e:
        raise ExportError(f"generated model.py is not valid Python: {e}") from None
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            mods = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            mods = [n.module or ""] if not n.level else ["."]
        else:
            mods = []
        for m in mods:
            if m.split(".")[0] not in allowed:
                raise ExportError(f"generated model.py imports {m!r}; allowed: {sorted(allowed)}")
        if isinstance(n, ast.Call):
            f = n.func
            if (isinstance(f, ast.Name) and f.id in _FORBIDDEN_CALLS) or (
                    isinstance(f, ast.Attribute) and f.attr in _FORBIDDEN_METHODS):
                name = f.id if isinstance(f, ast.Name) else f.attr
                raise ExportError(f"generated model.py calls {name!r} (line {n.lineno})")
        if isinstance(n, ast.Name) and n.id in _FORBIDDEN_NAMES:
            raise ExportError(f"generated model.py refers to {n.id!r} (line {n.lineno})")
