"""Export one architecture as a standalone PyTorch file (`model.py`) plus its weights.

`render_model_py(arch)` assembles the source of exactly the classes the architecture uses: the
helpers of `nas_attn/layers.py` they need, the used attention classes (their `@register`
decorator removed) and the helpers of their family files (`tokens.py` included when a token
module is used), `UNetDecoder` and `UNet`. A dependency walk over the module ASTs picks the
definitions, so nothing unused is copied. Then come an `ARCH` literal (the `unet_kwargs` of the
architecture), a `make_attention` factory that mirrors `registry.create_attention`,
`build_model()` and `load(path)`, then `INFERENCE` (the training patch size, overlap and
normalisation) with `preprocess(image)` and `predict(image, model, ...)`, built on the functions
of `nas_attn/infer.py` and `nas_attn/data/sliding.py`, copied like the layers (so the exported
file predicts with the package's own code). The result imports only torch and the standard
library modules math, typing, functools, itertools and collections; a timm-family attention
module (2D only) adds `import timm`, which the module docstring then says.

Safety: the code is assembled from this package's own source files and validated values only.
The architecture is re-validated (`UNetArch.from_dict(arch.to_dict())`); the literals use only
ints, finite floats, bools, None and strings that match `^[A-Za-z0-9_.-]{1,64}$` (registry names,
fixed vocabularies, option values), emitted with `repr`. Metadata strings (a study database can
be edited by hand) are reduced to a whitelist of characters with no quotes, backslashes or
newlines before they reach the docstring. The rendered file is parsed again and rejected if it
imports anything else or calls eval/exec/compile/__import__/open or os/sys/subprocess.

`export_arch(arch, out_dir)` writes `model.py`, `arch.json`, `meta.json` (when meta is given),
`weights.pt` (a state_dict, loadable with `torch.load(..., weights_only=True)`), and optionally
`model.ts` (TorchScript, traced at one input size) and `model.onnx` (dynamic batch and spatial
axes, multiples of 2**depth, checked with onnxruntime at two sizes; modules whose sizes are
fixed at trace time are named in the error). Files are written to a temporary name and then
renamed. `export_checkpoint` exports a `nas-attn train` output (checkpoint or its folder).

Timm: a timm-family attention module (2D) is copied like any other, and model.py then imports
timm for the layers it wraps. A timm encoder (`encoder_name="timm:<model>"`) is exported too:
model.py gets a copy of `nas_attn.unet_timm.TimmUNet`, which takes plain numbers like `UNet`
(`timm.create_model(..., features_only=True, pretrained=False)`; the weights come from
weights.pt). Both say in the docstring that timm is needed, and which version exported them.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import json
import math
import numbers
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from . import __version__
from .arch import ACTS, NORMS, UPSAMPLES, UNetArch
from .atomic import AtomicGroup, atomic_save, is_disk_full
from .errors import ArchError, NasAttnError
from .paths import claim_output_dir

__all__ = ["ExportError", "export_arch", "export_checkpoint", "inference_settings",
           "load_model_py", "render_model_py"]


class ExportError(NasAttnError):
    """An architecture, value or output format that cannot be exported."""


SAFE_STR = re.compile(r"^[A-Za-z0-9_\-\.]{1,64}$")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SITE = re.compile(r"^(?:(?:encoder|skip|decoder)\.[0-9]{1,2}|bottleneck)$")
_TIMM_ENCODER = re.compile(r"^timm:[A-Za-z0-9_\-\.]{1,64}$")
_META_CHARS = re.compile(r"[^A-Za-z0-9 _\-\.:/@+=,;()\[\]%~#*]")
_PACKAGE = __name__.rsplit(".", 1)[0]  # "nas_attn"
# the standard library modules copied code may import (the sliding window uses the last three)
_STDLIB = ("math", "typing", "functools", "itertools", "collections")
_BASE_IMPORTS = ("torch",) + _STDLIB
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "globals", "locals",
                    "breakpoint", "input"}
_FORBIDDEN_METHODS = {"system", "popen", "spawnv", "spawnl", "execv", "execl", "execve",
                      "__import__", "import_module", "check_output", "Popen"}
_FORBIDDEN_NAMES = {"os", "sys", "subprocess", "shutil", "importlib", "builtins", "socket"}
# names the generated tail defines; copied definitions with these names are renamed
_TAIL_NAMES = {"ARCH", "META", "ATTENTION", "INFERENCE", "make_attention", "build_model", "load",
               "preprocess", "predict", "__all__"}
# the torch-only inference functions copied into model.py (preprocess / predict build on them)
_INFER_ROOTS = ("normalise_percentile", "predict_logits", "to_probabilities", "labels_from_output")
FORMATS = ("onnx", "torchscript")


# ================================================================================================
# source analysis: which top-level definitions of which package modules a set of roots needs
# ================================================================================================
@dataclass
class _Module:
    name: str
    lines: list[str]
    defs: dict[str, ast.stmt]
    imports: dict[str, tuple[str, str | None]]  # alias -> (module, attribute or None = module)
    rank: int = 0


@dataclass
class _Def:
    key: tuple[str, str]  # (module, name)
    node: ast.stmt
    text: str
    refs: set[str]
    bound: set[str] = field(default_factory=set)


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking into the main branch of `if` / `try` blocks (guarded
    imports and definitions, e.g. `try: from timm.layers import X` / `if X is not None: class`)."""
    for node in body:
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(node.body)
        else:
            yield node


def _module_rank(name: str) -> int:
    if name == f"{_PACKAGE}.layers":
        return 0
    if name == f"{_PACKAGE}.attention.tokens":
        return 1
    if name.startswith(f"{_PACKAGE}.attention."):
        return 2
    return 3


class _SourceGraph:
    """Parses package modules lazily and resolves names to their defining (module, name)."""

    def __init__(self, allowed_roots: Iterable[str]):
        self.allowed_roots = set(allowed_roots)
        self.modules: dict[str, _Module] = {}
        self.external: dict[str, tuple[str, str | None]] = {}  # alias -> import target

    def module(self, name: str) -> _Module:
        if name not in self.modules:
            mod = importlib.import_module(name)
            try:
                src = inspect.getsource(mod)
            except (OSError, TypeError) as e:
                raise ExportError(f"cannot read the source of {name} to export it: {e}") from None
            tree = ast.parse(src)
            defs: dict[str, ast.stmt] = {}
            imports: dict[str, tuple[str, str | None]] = {}
            for node in _top_level(tree.body):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    defs[node.name] = node
                elif isinstance(node, ast.Assign):
                    for t in node.targets:
                        for n in ast.walk(t):
                            if isinstance(n, ast.Name):
                                defs[n.id] = node
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    defs[node.target.id] = node
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.asname:
                            imports[a.asname] = (a.name, None)
                        else:
                            root = a.name.split(".")[0]
                            imports[root] = (root, None)
                elif isinstance(node, ast.ImportFrom):
                    if node.module == "__future__":
                        continue
                    base = node.module
                    if node.level:
                        base = importlib.util.resolve_name(
                            "." * node.level + (node.module or ""), mod.__package__)
                    for a in node.names:
                        imports[a.asname or a.name] = (base, a.name)
            self.modules[name] = _Module(name, src.splitlines(), defs, imports, _module_rank(name))
        return self.modules[name]

    def _internal(self, module: str) -> bool:
        return module == _PACKAGE or module.startswith(_PACKAGE + ".")

    def resolve(self, module: str, name: str, *, used_by: str) -> tuple[str, Any] | None:
        """('def', (module, name)) | ('ext', alias) | None (builtin or local)."""
        mod = self.module(module)
        if name in mod.defs:
            return "def", (module, name)
        if name in mod.imports:
            target, attr = mod.imports[name]
            if self._internal(target):
                package = importlib.import_module(target)
                if attr is None or inspect.ismodule(getattr(package, attr, None)):
                    raise ExportError(
                        f"{used_by} uses the module alias {name!r} ({target}); the exporter "
                        "copies definitions, so import the names themselves (from .x import y)")
                found = self.resolve(target, attr, used_by=used_by)
                if found is None:
                    raise ExportError(f"{used_by} imports {attr!r} from {target}, which does not "
                                      "define it at its top level; cannot export it")
                return found
            root = target.split(".")[0]
            if root not in self.allowed_roots:
                raise ExportError(
                    f"{used_by} needs {name!r} from {target!r}, but model.py may import only "
                    f"{', '.join(sorted(self.allowed_roots))}")
            prev = self.external.get(name)
            if prev is not None and prev[1] == attr and {prev[0], target} <= {
                    "typing", "collections.abc"}:
                return "ext", name  # typing.Sequence and collections.abc.Sequence: one ABC
            if prev is not None and prev != (target, attr):
                raise ExportError(f"import alias {name!r} means {prev} in one module and "
                                  f"{(target, attr)} in another; cannot merge them into model.py")
            self.external[name] = (target, attr)
            return "ext", name
        return None

    def is_register(self, module: str, dec: ast.expr) -> bool:
        """True for the registry's `@register(...)` decorator."""
        func = dec.func if isinstance(dec, ast.Call) else dec
        mod = self.module(module)
        if isinstance(func, ast.Name):
            target = mod.imports.get(func.id)
            return target is not None and target[1] == "register" and self._internal(target[0])
        if isinstance(func, ast.Attribute) and func.attr == "register":
            return isinstance(func.value, ast.Name) and func.value.id in ("registry",)
        return False

    def definition(self, key: tuple[str, str]) -> _Def:
        module, name = key
        mod = self.module(module)
        node = mod.defs[name]
        start, drop = node.lineno, set()
        for dec in getattr(node, "decorator_list", []):
            if self.is_register(module, dec):
                drop.update(range(dec.lineno, dec.end_lineno + 1))  # '@' is on dec.lineno
            start = min(start, dec.lineno)
        while start > 1 and mod.lines[start - 2].lstrip().startswith("#"):
            start -= 1  # keep the comment block right above the definition
        lines = [mod.lines[i - 1] for i in range(start, node.end_lineno + 1) if i not in drop]
        text = textwrap.dedent("\n".join(lines))  # definitions inside `if X is not None:`
        refs, bound = set(), set()
        kept_decs = [d for d in getattr(node, "decorator_list", [])
                     if not self.is_register(module, d)]
        walk_roots: list[ast.AST] = list(kept_decs)
        if isinstance(node, ast.ClassDef):
            walk_roots += node.bases + [k.value for k in node.keywords] + node.body
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            walk_roots += [node.args, *node.body] + ([node.returns] if node.returns else [])
        else:
            walk_roots = [node]
        for root in walk_roots:
            for n in ast.walk(root):
                if isinstance(n, ast.Name):
                    (refs if isinstance(n.ctx, ast.Load) else bound).add(n.id)
                elif isinstance(n, ast.arg):
                    bound.add(n.arg)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    bound.add(n.name)
                elif isinstance(n, ast.alias):
                    bound.add((n.asname or n.name).split(".")[0])
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    bound.add(n.name)
        return _Def(key, node, text, refs, bound)


def _collect(graph: _SourceGraph, roots: Sequence[tuple[str, str]]) -> tuple[list[_Def], dict]:
    """All definitions the roots need, in an order where dependencies come first."""
    defs: dict[tuple[str, str], _Def] = {}
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    todo = list(roots)
    builtin_names = set(dir(builtins))
    while todo:
        key = todo.pop()
        if key in defs:
            continue
        d = graph.definition(key)
        defs[key] = d
        deps[key] = set()
        where = f"{key[0]}.{key[1]}"
        for ref in sorted(d.refs):
            r = graph.resolve(key[0], ref, used_by=where)
            if r is None:
                if ref not in builtin_names and ref not in d.bound:
                    raise ExportError(f"{where} uses {ref!r}, which is neither defined nor "
                                      "imported at the top of its module; cannot export it")
                continue
            if r[0] == "def" and r[1] != key:
                deps[key].add(r[1])
                todo.append(r[1])
    # Kahn's algorithm; ties by (module rank, module, line); cycles (call-time only) broken
    def prio(k):
        return graph.modules[k[0]].rank, k[0], defs[k].node.lineno

    done: list[tuple[str, str]] = []
    left = set(defs)
    seen_nodes: set[int] = set()
    while left:
        ready = [k for k in left if not (deps[k] & left)] or [min(left, key=prio)]
        k = min(ready, key=prio)
        left.discard(k)
        if id(defs[k].node) not in seen_nodes:  # `a = b = 1` defines two names in one statement
            seen_nodes.add(id(defs[k].node))
            done.append(k)
        else:
            for other in done:
                if defs[other].node is defs[k].node:
                    defs[k] = defs[other]
    return [defs[k] for k in done], {k: defs[k] for k in defs}


def _rename_tokens(text: str, mapping: Mapping[str, str]) -> str:
    """Rename NAME tokens of `mapping` in text (not attributes `x.name`, not `name=` keywords)."""
    if not mapping:
        return text
    toks = list(tokenize.generate_tokens(io.StringIO(text + "\n").readline))
    edits = []
    depth = 0
    for i, t in enumerate(toks):
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        if t.type != tokenize.NAME or t.string not in mapping:
            continue
        skip = (tokenize.NL, tokenize.COMMENT)
        prev = next((p for p in reversed(toks[:i]) if p.type not in skip), None)
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if prev is not None and prev.type == tokenize.OP and prev.string == ".":
            continue
        if depth > 0 and nxt is not None and nxt.type == tokenize.OP and nxt.string == "=":
            continue
        edits.append((t.start, t.end, mapping[t.string]))
    lines = text.split("\n")
    for (row, c0), (_, c1), new in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:c0] + new + line[c1:]
    return "\n".join(lines)


# ================================================================================================
# literals and metadata
# ================================================================================================
def _lit(v: Any, where: str) -> str:
    """A Python literal for a validated value: bool, int, finite float, None, safe str, or
    lists / tuples / mappings of those."""
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, numbers.Integral):
        return repr(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if not math.isfinite(f):
            raise ExportError(f"{where}: value {f!r} is not finite; cannot export it")
        return repr(f)
    if isinstance(v, str):
        if not SAFE_STR.match(v):
            raise ExportError(f"{where}: string {v[:80]!r} is not exportable; strings in model.py "
                              f"must match {SAFE_STR.pattern}")
        return repr(str(v))
    if isinstance(v, (list, tuple)):
        items = [_lit(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(v, Mapping):
        parts = []
        for k, x in v.items():
            if not isinstance(k, str) or not SAFE_STR.match(k):
                raise ExportError(f"{where}: key {str(k)[:80]!r} is not exportable")
            parts.append(f"{k!r}: {_lit(x, f'{where}.{k}')}")
        return "{" + ", ".join(parts) + "}"
    raise ExportError(f"{where}: value of type {type(v).__name__} cannot be exported "
                      "(accepted: bool, int, float, str, None, lists and mappings of them)")


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


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    labels = {"score": "Score (validation Dice)", "cost": "Cost", "source": "Source"}
    order = [k for k in ("score", "cost", "source") if k in meta] + \
        [k for k in meta if k not in ("score", "cost", "source")]
    lines = []
    for k in order:
        v = meta[k]
        label = labels.get(k, k)
        if isinstance(v, Mapping):
            body = ", ".join(f"{kk} {_fmt_value(vv)}" for kk, vv in v.items())  # no quotes
        else:
            body = _fmt_value(v)
        lines.append(f"{label}: {body}" if body else f"{label}: -")
    return lines


def _meta_literal(meta: Mapping[str, Any]) -> str:
    """META as a literal: keys and strings are sanitised text (no quotes, backslashes), via repr."""
    def lit(v):
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{str(k)!r}: {lit(x)}" for k, x in v.items()) + "}"
        if isinstance(v, str):
            return repr(sanitize_text(v))
        return _lit(v, "meta")

    return lit(meta)


# ================================================================================================
# rendering
# ================================================================================================
def _validated(arch: UNetArch | Mapping) -> UNetArch:
    from .attention import registry

    try:
        arch = UNetArch.from_dict(arch.to_dict() if isinstance(arch, UNetArch) else arch)
    except ArchError:
        raise
    except Exception as e:  # anything from_dict did not expect is still a bad architecture
        raise ExportError(f"architecture does not validate: {e}") from None
    if arch.encoder_name != "unet":
        if not _TIMM_ENCODER.match(arch.encoder_name):
            raise ExportError(f"encoder_name {arch.encoder_name[:80]!r} is not exportable; a timm "
                              f"encoder name must match {_TIMM_ENCODER.pattern}")
        if any(spec.opts.get("context") == "aux" for _, spec in arch.sites()):
            raise ExportError("cross attention with context='aux' is not supported with a timm "
                              "encoder (nas_attn.unet_timm refuses it too)")
    if arch.block.norm not in NORMS or arch.block.act not in ACTS or arch.upsample not in UPSAMPLES:
        raise ExportError("block norm/act or upsample outside the fixed vocabularies")
    known = set(registry.names())
    for site, spec in arch.sites():
        if spec.name is None:
            continue
        if spec.name not in known or not SAFE_STR.match(spec.name):
            raise ExportError(f"{site}: attention {spec.name!r} is not a registered name")
        accepted = registry.get_info(spec.name).options()
        for k, v in spec.options:
            if k not in accepted or not _SAFE_KEY.match(k):
                raise ExportError(f"{site}: option {k!r} of {spec.name!r} is not exportable")
            _lit(v, f"{site}.{spec.name}.{k}")  # raises for quotes, newlines, non-finite, ...
    return arch


def _arch_literal(kw: Mapping[str, Any]) -> str:
    lines = ["ARCH = {"]
    for k, v in kw.items():
        if not SAFE_STR.match(k):
            raise ExportError(f"unet argument {k!r} is not exportable")
        if k == "sites":
            lines.append(f"    {k!r}: {{")
            for site, (name, opts) in v.items():
                if not _SITE.match(site):
                    raise ExportError(f"site {site!r} is not exportable")
                lines.append(f"        {site!r}: ({_lit(name, site)}, {_lit(dict(opts), site)}),")
            lines.append("    },")
        else:
            lines.append(f"    {k!r}: {_lit(v, k)},")
    lines.append("}")
    return "\n".join(lines)


_TAIL = '''
def make_attention(name, channels, *, spatial_dims, guide_channels=None, **options):
    """Attention module by name, as `nas_attn.attention.create_attention` builds it.

    None gives a pass-through; at a skip site (`guide_channels` given) paired modules get the
    guide, single ones are wrapped to ignore it.
    """
    if name is None:
        return {PassThrough}()
    if name not in ATTENTION:
        raise ValueError(f"attention {{name!r}} is not in this file; known: {{sorted(ATTENTION)}}")
    cls, kind = ATTENTION[name]
    if kind == "paired":
        if guide_channels is None:
            raise ValueError(f"attention {{name!r}} needs a guiding feature (skip sites only)")
        return cls(channels, spatial_dims=spatial_dims, guide_channels=guide_channels, **options)
    module = cls(channels, spatial_dims=spatial_dims, **options)
    return module if guide_channels is None else {IgnoreGuide}(module)


def build_model() -> {UNet}:
    """The architecture of this file with freshly initialised weights."""
    return {UNet}(**ARCH, make_attention=make_attention)


def load(weights_path, map_location="cpu") -> {UNet}:
    """The model with the exported weights (a state_dict), in eval mode."""
    model = build_model()
    state = torch.load(weights_path, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()


{predict}


if __name__ == "__main__":
    model = build_model().eval()
    x = torch.randn(1, ARCH["in_channels"], *[{size}] * ARCH["spatial_dims"])
    aux = torch.randn(1, ARCH["aux_channels"], *x.shape[2:]) if ARCH["aux_channels"] else None
    with torch.no_grad():
        y = model(x, aux)
    print(f"{{sum(p.numel() for p in model.parameters()):,}} parameters; "
          f"input {{tuple(x.shape)}} -> logits {{tuple(y.shape)}}")
'''


_PREDICT_TAIL = '''
def preprocess(image, channels=None):
    """The training normalisation of one image: (C, *spatial), or (*spatial) for one channel,
    to float32 (C, *spatial), per channel from its INFERENCE['low_percentile'] (-> 0) to its
    INFERENCE['high_percentile'] (-> 1), clipped to [0, 1]. Accepts tensors and arrays."""
    x = torch.as_tensor(image)
    dims = ARCH["spatial_dims"]
    if x.dim() == dims:
        x = x[None]
    if x.dim() != dims + 1:
        raise ValueError(f"expected a (C, *spatial) image with {dims} spatial axes, got shape "
                         f"{tuple(x.shape)}")
    if channels is not None and x.shape[0] != channels:
        raise ValueError(f"expected {channels} channels first, got shape {tuple(x.shape)}")
    return __NORMALISE__(x, INFERENCE["low_percentile"], INFERENCE["high_percentile"])


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
    if output not in ("labels", "probabilities", "logits"):
        raise ValueError(f"output must be 'labels', 'probabilities' or 'logits', not {output!r}")
    if output == "logits" and tta:
        raise ValueError("output='logits' cannot be averaged over flips; use 'probabilities'")
    device = next(model.parameters()).device
    x = preprocess(image, ARCH["in_channels"]) if normalise else torch.as_tensor(image).float()
    a = None
    if ARCH["aux_channels"]:
        if aux is None:
            raise ValueError(f"this model also takes an auxiliary image "
                             f"({ARCH['aux_channels']} channels): predict(image, model, aux=...)")
        a = preprocess(aux, ARCH["aux_channels"]) if normalise else torch.as_tensor(aux).float()
        a = a[None].to(device)
    x = x[None].to(device)
    if x.shape[1] != ARCH["in_channels"] or x.dim() != ARCH["spatial_dims"] + 2:
        raise ValueError(f"expected ({ARCH['in_channels']}, *spatial) with "
                         f"{ARCH['spatial_dims']} spatial axes, got {tuple(x.shape[1:])}")
    out, is_probs = __PREDICT_LOGITS__(
        model, x, patch_size=INFERENCE["patch_size"], aux=a, tta=tta, batch=batch,
        overlap=INFERENCE["overlap"] if overlap is None else overlap)
    if output == "labels":
        return __LABELS__(out, is_probs)[0]
    if output == "probabilities" and not is_probs:
        out = __PROBS__(out)
    return out[0]
'''


def inference_settings(patch_size: Sequence[int] | None = None, overlap: float | None = None,
                       spatial_dims: int = 2) -> dict[str, Any]:
    """The INFERENCE literal of model.py: how `predict` preprocesses and tiles an image
    (the training normalisation and patch size). `patch_size` None: one pass on every image."""
    from .infer import DEFAULT_OVERLAP, HIGH_PERCENTILE, LOW_PERCENTILE

    ps = None
    if patch_size is not None:
        ps = [int(p) for p in (patch_size if isinstance(patch_size, (list, tuple))
                               else [patch_size])]
        if len(ps) == 1:
            ps = ps * spatial_dims
        if len(ps) != spatial_dims or any(p < 1 for p in ps):
            raise ExportError(f"patch_size {ps} must have {spatial_dims} positive entries")
    ov = DEFAULT_OVERLAP if overlap is None else float(overlap)
    if not 0.0 <= ov < 1.0:
        raise ExportError(f"overlap {ov} must be in [0, 1)")
    return {"patch_size": ps, "overlap": ov, "normalisation": "percentile",
            "low_percentile": float(LOW_PERCENTILE), "high_percentile": float(HIGH_PERCENTILE)}


def _docstring(arch: UNetArch, meta: Mapping[str, Any], uses_timm: bool) -> str:
    from .attention import registry

    dims = arch.spatial_dims
    spatial = "H, W" if dims == 2 else "D, H, W"
    example = "64, 64" if dims == 2 else "32, 32, 32"
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
        f"    x = preprocess(image)  # ({arch.in_channels}, {spatial}) float32 in [0, 1], exactly "
        "the training",
        "    # normalisation: per channel, 0.5th percentile -> 0, 99.5th -> 1, clipped",
        f"    labels = predict(image, model{aux_arg})  # ({spatial}) int64 class ids",
        f"    probs = predict(image, model{aux_arg}, output='probabilities', tta=True)",
        "    # predict() preprocesses, then runs a sliding window (INFERENCE: patch size,",
        "    # overlap 0.25, Gaussian weights) on images larger than the training patch;",
        "    # tta=True averages all flips (not for lateralised left/right classes).",
    ]
    text = "\n".join(l.rstrip() for l in lines)
    if '"' in text or "\\" in text:  # cannot happen with sanitised parts; never emit it anyway
        raise ExportError("internal error: docstring text contains quotes or backslashes")
    return text


def _format(code: str) -> str:
    """`ruff format` when available (a dev tool), else the code as assembled (already tidy)."""
    ruff = shutil.which("ruff")
    if ruff is None:
        return code
    try:
        res = subprocess.run([ruff, "format", "--isolated", "--line-length", "100",
                              "--stdin-filename", "model.py", "-"], input=code,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return code
    return res.stdout if res.returncode == 0 and res.stdout.strip() else code


def check_generated(code: str, *, allowed_imports: Iterable[str] = _BASE_IMPORTS) -> None:
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


def render_model_py(arch: UNetArch, *, meta: dict | None = None, example_size: int | None = None,
                    inference: Mapping[str, Any] | None = None) -> str:
    """The source of a standalone `model.py` for `arch` (see the module docstring).

    `inference` (from `inference_settings`): the patch size and normalisation `predict` uses;
    default: no patch size (one pass on every image), the training normalisation."""
    from . import infer as infer_module
    from . import unet as unet_module
    from .attention import registry

    arch = _validated(arch)
    meta = sanitize_meta(meta)
    used = arch.attention_names()
    infos = [registry.get_info(n) for n in used]
    uses_timm = any(i.family == "timm" for i in infos) or arch.encoder_name.startswith("timm:")
    allowed = _BASE_IMPORTS + (("timm",) if uses_timm else ())
    graph = _SourceGraph(allowed)

    def key_of(obj) -> tuple[str, str]:
        mod = sys.modules[obj.__module__]
        if getattr(mod, obj.__name__, None) is not obj:
            raise ExportError(f"{obj.__qualname__} is not a top-level definition of "
                              f"{obj.__module__}; cannot copy its source")
        return obj.__module__, obj.__name__

    layers_mod = f"{_PACKAGE}.layers"
    timm_encoder = arch.encoder_name.startswith("timm:")
    if timm_encoder:
        from . import unet_timm

        net_cls, kw = unet_timm.TimmUNet, unet_timm.timm_kwargs(arch)
    else:
        net_cls, kw = unet_module.UNet, unet_module.unet_kwargs(arch)
    roots = [key_of(net_cls)]
    roots += [(layers_mod, "PassThrough"), (layers_mod, "IgnoreGuide")]
    roots += [key_of(i.cls) for i in infos]
    roots += [key_of(getattr(infer_module, n)) for n in _INFER_ROOTS]
    order, defs = _collect(graph, roots)

    # output names: the definition's own name unless taken (by another module's definition, a
    # builtin, an import alias or a name of the generated tail)
    if timm_encoder:
        graph.external.setdefault("timm", ("timm", None))
        if graph.external["timm"] != ("timm", None):
            raise ExportError("the name 'timm' is used for something else than the timm module")
    taken = set(_TAIL_NAMES) | set(graph.external) | set(dir(builtins))
    out_name: dict[tuple[str, str], str] = {}
    for d in order:
        for key, other in defs.items():
            if other is d:
                name = key[1]
                if name in taken:
                    name = f"{key[1]}_{key[0].rsplit('.', 1)[-1]}"
                    n = 2
                    while name in taken:
                        name, n = f"{key[1]}_{key[0].rsplit('.', 1)[-1]}{n}", n + 1
                taken.add(name)
                out_name[key] = name

    blocks: list[str] = []
    current = None
    for d in order:
        module = d.key[0]
        head = ""
        if module != current:
            head = f"# {'-' * 8} from {module.replace('.', '/')}.py {'-' * 8}\n"
            current = module
        mapping = {}
        for ref in d.refs | {k[1] for k, v in defs.items() if v is d}:
            r = graph.resolve(module, ref, used_by=module)
            if r is not None and r[0] == "def" and out_name[r[1]] != ref:
                mapping[ref] = out_name[r[1]]
        blocks.append(head + _rename_tokens(d.text, mapping))

    # header imports: those the copied code needs, plus torch for the tail
    externals = dict(graph.external)
    externals.setdefault("torch", ("torch", None))
    std: list[str] = []
    third: list[str] = []
    froms: dict[str, list[str]] = {}
    for alias, (target, attr) in sorted(externals.items(), key=lambda kv: (kv[1][0], kv[0])):
        group = std if target.split(".")[0] in _STDLIB else third
        if attr is None:
            group.append(f"import {target}" + ("" if alias == target else f" as {alias}"))
        else:
            if target not in froms:
                froms[target] = []
                group.append(target)  # placeholder, filled below
            froms[target].append(attr if alias == attr else f"{attr} as {alias}")
    std, third = ([f"from {x} import {', '.join(froms[x])}" if x in froms else x for x in g]
                  for g in (std, third))
    header = ["from __future__ import annotations", ""] + std + [""] + third

    attention_lines = ["ATTENTION = {"]
    for info in infos:
        attention_lines.append(f"    {info.name!r}: ({out_name[key_of(info.cls)]}, {info.kind!r}),")
    attention_lines.append("}")
    if any("attention_name" in b for b in blocks):
        attention_lines += [f"{out_name[key_of(i.cls)]}.attention_name = {i.name!r}" for i in infos]

    size = example_size or (64 if arch.spatial_dims == 2 else 32)
    unet_name = out_name[key_of(net_cls)]
    settings = dict(inference) if inference is not None else \
        inference_settings(spatial_dims=arch.spatial_dims)
    settings = inference_settings(settings.get("patch_size"), settings.get("overlap"),
                                  arch.spatial_dims)  # validated again: only numbers reach the file
    predict_tail = _PREDICT_TAIL.strip("\n")
    for placeholder, fn in (("__NORMALISE__", "normalise_percentile"),
                            ("__PREDICT_LOGITS__", "predict_logits"),
                            ("__LABELS__", "labels_from_output"), ("__PROBS__", "to_probabilities")):
        predict_tail = predict_tail.replace(placeholder,
                                            out_name[key_of(getattr(infer_module, fn))])
    doc = _docstring(arch, meta, uses_timm)
    parts = [
        f'"""{doc}\n"""',
        "\n".join(header) + "\n\n"
        f"__all__ = ['ARCH', 'INFERENCE', 'META', {unet_name!r}, 'build_model', 'load', "
        "'make_attention', 'predict', 'preprocess']",
        "\n\n\n".join(blocks),
        "# " + "=" * 96 + "\n# the exported architecture\n# " + "=" * 96,
        _arch_literal(kw),
        f"META = {_meta_literal(meta)}",
        f"INFERENCE = {_lit(settings, 'inference')}",
        "\n".join(attention_lines),
        _TAIL.strip("\n").format(PassThrough=out_name[(layers_mod, "PassThrough")],
                                 IgnoreGuide=out_name[(layers_mod, "IgnoreGuide")],
                                 UNet=unet_name, size=int(size), predict=predict_tail),
    ]
    code = "\n\n\n".join(parts) + "\n"
    check_generated(code, allowed_imports=allowed)
    code = _format(code)
    check_generated(code, allowed_imports=allowed)
    return code


# ================================================================================================
# files
# ================================================================================================
def _state_dict(weights: Path | str | Mapping, arch: UNetArch) -> dict:
    import torch

    from .unet import build_unet

    if isinstance(weights, (str, Path)):
        try:
            obj = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ExportError(f"cannot read weights {str(weights)!r}: {e}") from None
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
    state = {str(k): v.detach().cpu().contiguous() for k, v in obj.items()}
    model = build_unet(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"weights do not match the architecture: {e}") from None
    return state


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


def _example_inputs(arch: UNetArch, size: Sequence[int]):
    import torch

    x = torch.randn(1, arch.in_channels, *size)
    if arch.aux_channels:
        return x, torch.randn(1, arch.aux_channels, *size)
    return (x,)


class OnnxUnsupportedError(ExportError):
    """An architecture whose attention modules cannot be exported to ONNX with dynamic axes."""


def _onnx_missing() -> str | None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"ONNX export needs {', '.join(missing)} (torch's exporter needs onnx and onnxscript, "
            "the check against torch onnxruntime): pip install 'nas-attn[onnx]'")


def _dynamic_program(model, inputs, multiple: int, other: Sequence[int]):
    """torch.export with a dynamic batch and spatial axes that are multiples of `multiple`
    (2**depth: max pooling with ceil_mode and the decoder's resizing are exact there), run once
    at the `other` spatial size against the eager model (fails fast where a module fixed a size
    at trace time)."""
    import torch

    Dim = torch.export.Dim
    spatial = inputs[0].dim() - 2
    dims = {0: Dim("batch", min=1, max=1024)}
    dims.update({2 + i: multiple * Dim(f"size{i}", min=1, max=4096) for i in range(spatial)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, tuple(inputs), dynamic_shapes=tuple(
            dims for _ in inputs), strict=False)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, x.shape[1], *other, generator=gen) for x in inputs]
    with torch.no_grad():
        want, got = model(*xs), program.module()(*xs)
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4, rtol=1e-3):
        raise ExportError(f"the exported graph disagrees with torch at input size {tuple(other)}")
    return program


def _onnx_check(model, path: Path, inputs, sizes) -> float:
    """Largest |onnxruntime - torch| over inputs of each of `sizes` (batch 2); raises if the
    outputs disagree."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        xs = [torch.randn(2, x.shape[1], *size, generator=gen) for x in inputs]
        with torch.no_grad():
            want = model(*xs).numpy()
        got = sess.run(None, dict(zip(names, [x.numpy() for x in xs])))[0]
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise ExportError(f"onnxruntime's output at input size {tuple(size)} differs from "
                              "torch's")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _onnx_culprits(arch: UNetArch) -> list[str]:
    """The attention modules of `arch` whose shapes do not follow the input in an exported
    graph (each alone in a small UNet of depth 2, at sizes beyond the token budgets)."""
    import torch

    from .attention import registry
    from .unet import build_unet

    bad = []
    size, other = ((32, 32), (24, 40)) if arch.spatial_dims == 2 else ((8, 8, 8), (12, 8, 16))
    for name in arch.attention_names():
        spec = next(s for _, s in arch.sites() if s.name == name)
        site = "skip" if registry.get_info(name).kind == "paired" else "encoder"
        small = UNetArch(spatial_dims=arch.spatial_dims, depth=2, widths=(4, 8, 8),
                         **{site: (spec, None)})
        model = build_unet(small).eval()
        try:
            _dynamic_program(model, [torch.randn(2, 1, *size)], 4, other)
        except Exception:  # noqa: BLE001  (any failure marks the module)
            bad.append(name)
    return bad


def _export_onnx(model, inputs, path: Path, arch: UNetArch | None = None) -> dict:
    """model.onnx with dynamic batch and spatial axes (multiples of 2**depth), checked with
    onnxruntime against torch at the export size and at another size. Returns the check."""
    problem = _onnx_missing()
    if problem:
        raise ExportError(problem)
    depth = len(arch.widths) - 1 if arch is not None else 0
    multiple = 2 ** depth
    size = tuple(inputs[0].shape[2:])
    if any(s % multiple for s in size):
        raise ExportError(f"ONNX input size {size} must be a multiple of 2**depth = {multiple} "
                          "on every axis")
    other = tuple(s + multiple * (k + 1) for k, s in enumerate(size))
    inputs = [x.repeat(2, *[1] * (x.dim() - 1)) if x.shape[0] == 1 else x for x in inputs]
    result: dict = {}  # (a batch of 1 would fix the batch axis at 1)

    def save(tmp: Path):
        try:
            import torch

            program = _dynamic_program(model, inputs, multiple, other)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(program, tuple(inputs), str(tmp), dynamo=True,
                                  input_names=["image", "aux"][: len(inputs)],
                                  output_names=["logits"], verbose=False,
                                  external_data=False)  # one file (weights inside), renamed whole
            result["max_abs_diff"] = _onnx_check(model, tmp, inputs, [size, other])
        except Exception as e:  # noqa: BLE001  (torch.export / onnx / onnxruntime failures)
            if is_disk_full(e):
                raise
            bad = _onnx_culprits(arch) if arch is not None else []
            if bad:
                raise OnnxUnsupportedError(
                    f"cannot export to ONNX with dynamic spatial axes: attention module"
                    f"{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad)} "
                    "compute their token grids / resampling sizes in Python from the input "
                    "size, which the exported graph cannot follow; use model.py (any size) or "
                    "an architecture without them") from None
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(f"ONNX export failed: {first}") from None
        result["sizes"] = [list(size), list(other)]

    atomic_save(path, save)
    return result


def _export_torchscript(model, inputs, path: Path) -> None:
    import torch

    def save(tmp: Path):
        with warnings.catch_warnings():
            # TracerWarnings about shape-dependent branches; FutureWarning: torch.jit is deprecated
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, tuple(inputs), check_trace=False)
            with torch.no_grad():
                want, got = model(*inputs), traced(*inputs)
            if not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
                raise ExportError("the traced TorchScript model disagrees with the eager model")
            with open(tmp, "wb") as f:  # to a path, a full disk aborts the process
                torch.jit.save(traced, f)

    atomic_save(path, save)


def export_arch(arch: UNetArch, out_dir: Path, *, weights: Path | dict | None = None,
                meta: dict | None = None, formats: tuple[str, ...] = (),
                input_size: Sequence[int] | None = None,
                inference: Mapping[str, Any] | None = None, force: bool = False) -> dict[str, Path]:
    """Write model.py, arch.json, meta.json (with meta or inference), weights.pt (with weights)
    and the asked formats ("onnx" -> model.onnx, "torchscript" -> model.ts) into out_dir, which
    must be new, empty or an earlier export unless `force` (`paths.claim_output_dir`).

    `inference` (see `inference_settings`: the training patch size, the sliding-window overlap,
    the normalisation) becomes model.py's INFERENCE and meta.json's "inference".

    `weights`: a state_dict, or the path of one (or of a checkpoint holding one under
    'state_dict' / 'model'); it must load strictly into `build_unet(arch)`. TorchScript is traced
    at `input_size` (default 64² in 2D, 32³ in 3D): shape-dependent resizing is fixed to that
    size, so feed inputs of that size to model.ts. ONNX is exported at `input_size` with dynamic
    batch and spatial axes (multiples of 2**depth) and checked with onnxruntime at that size and
    a larger one (model.py takes any size).
    Returns the paths written, under the keys "model", "arch", "meta", "weights", "onnx",
    "torchscript".
    """
    import torch

    arch = _validated(arch)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown export formats {bad}; accepted: {', '.join(FORMATS)}")
    size = tuple(int(s) for s in input_size) if input_size else \
        (64,) * 2 if arch.spatial_dims == 2 else (32,) * 3
    if len(size) != arch.spatial_dims or any(s < 1 for s in size):
        raise ExportError(f"input_size {size} must have {arch.spatial_dims} positive entries")
    if "onnx" in formats and _onnx_missing():  # fail before writing anything
        raise ExportError(_onnx_missing())
    state = _state_dict(weights, arch) if weights is not None else None
    out_dir = claim_output_dir(out_dir, "export", force=force)
    settings = inference_settings((inference or {}).get("patch_size"),
                                  (inference or {}).get("overlap"), arch.spatial_dims)
    code = render_model_py(arch, meta=meta, example_size=size[0], inference=settings)
    # every file is written under a temporary name and renamed only when all are: a failure (a
    # full disk) leaves an earlier export in this folder whole, never half replaced
    with AtomicGroup() as group:
        files = {"model": out_dir / "model.py", "arch": out_dir / "arch.json"}
        model_tmp = group.write(files["model"], code)  # what `formats` import
        group.write(files["arch"], arch.to_json(indent=2) + "\n")
        if meta is not None or inference is not None:
            doc = sanitize_meta(meta)
            doc["inference"] = settings
            files["meta"] = out_dir / "meta.json"
            group.write(files["meta"], json.dumps(doc, indent=2) + "\n")
        if state is not None:
            files["weights"] = out_dir / "weights.pt"
            with group.file(files["weights"]) as f:
                torch.save(state, f)
        if formats:
            module = load_model_py(model_tmp)
            model = module.build_model()
            if state is not None:
                model.load_state_dict(state)
            model.eval()
            inputs = _example_inputs(arch, size)
            if "torchscript" in formats:
                files["torchscript"] = out_dir / "model.ts"
                _export_torchscript(model, inputs, group.stage(files["torchscript"]))
            if "onnx" in formats:
                files["onnx"] = out_dir / "model.onnx"
                _export_onnx(model, inputs, group.stage(files["onnx"]), arch)
    return files


def export_trial(study, number: int | None = None, out_dir: Path | None = None, *,
                 formats: tuple[str, ...] = (), runs_dir: Path = Path("runs"),
                 force: bool = False):
    """Export one trial of a study (the best when `number` is None): model.py, arch.json, the
    weights when the trial kept a checkpoint. Returns (paths written, the frozen trial)."""
    from .search.report import get_trial, trial_arch

    final = study.user_attrs.get("finalize") or {}
    if number is None and final.get("winner") is not None:
        number = int(final["winner"])  # the full-budget winner, chosen on validation
    trial = get_trial(study, number)
    arch = trial_arch(trial)
    ua = trial.user_attrs
    meta = {
        "score_dice": trial.values[0] if trial.values else None,
        "score_metric": "validation Dice per class, pooled over the split",
        "params": ua.get("params"), "flops": ua.get("flops"),
        "latency_ms": ua.get("latency_ms"),
        "study": study.study_name, "trial": trial.number, "state": trial.state.name.lower(),
    }
    ckpt = ua.get("checkpoint")
    row = next((r for r in final.get("candidates", []) if r.get("trial") == trial.number), None)
    if row is not None:  # retrained with the full budget: export those weights and scores
        meta["score_dice"] = row["val_mean"]
        meta["score_test_dice"] = row.get("test_mean")
        best = max(range(len(row["val"])), key=lambda i: row["val"][i])
        ckpt = row["checkpoints"][best] or ckpt
    weights = Path(ckpt) if ckpt and Path(ckpt).exists() else None
    out = Path(out_dir) if out_dir else Path(runs_dir) / "export" / \
        f"{sanitize_text(study.study_name, 48).replace(' ', '_')}_trial{trial.number}"
    inference = None
    if weights is not None:  # the patch size the weights were trained at
        from .predict import checkpoint_inference
        from .train.checkpoint import read_checkpoint

        try:
            obj = read_checkpoint(weights)
            patch, overlap, _ = checkpoint_inference(weights, arch, dict(obj.get("meta") or {}))
            inference = {"patch_size": patch, "overlap": overlap}
        except NasAttnError:
            inference = None
    return export_arch(arch, out, weights=weights, meta=meta, formats=formats,
                       inference=inference, force=force), trial


def export_checkpoint(path: Path | str, out_dir: Path | None = None, *,
                      formats: tuple[str, ...] = (), runs_dir: Path = Path("runs"),
                      input_size: Sequence[int] | None = None, force: bool = False):
    """Export a `nas-attn train` output (its folder or its best.pt) or any nas-attn checkpoint:
    model.py with its patch size and normalisation, arch.json, meta.json, weights.pt.
    Returns (paths written, architecture)."""
    from .predict import checkpoint_inference, find_checkpoint
    from .train.checkpoint import read_checkpoint

    path = Path(path)
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise ExportError(f"{path}: not a checkpoint file or a `nas-attn train` folder holding "
                          "best.pt")
    obj = read_checkpoint(ckpt)
    arch = UNetArch.from_json(obj["arch"])
    ckpt_meta = dict(obj.get("meta") or {})
    patch, overlap, _ = checkpoint_inference(ckpt, arch, ckpt_meta)
    metrics = ckpt_meta.get("metrics") or {}
    meta = {
        "score_dice": metrics.get("dice"),
        "score_metric": "validation Dice per class, pooled over the split",
        "epoch": ckpt_meta.get("epoch"),
        "checkpoint": str(ckpt),
    }
    name = ckpt.parent.name if ckpt.name == "best.pt" else ckpt.stem
    out = Path(out_dir) if out_dir else Path(runs_dir) / "export" / \
        (sanitize_text(name, 48).replace(" ", "_") or "model")
    files = export_arch(arch, out, weights=obj["state_dict"], meta=meta, formats=formats,
                        input_size=input_size,
                        inference={"patch_size": patch, "overlap": overlap}, force=force)
    return files, arch
