"""The package's shape: no import cycles, no upward imports, no import strings (which would hide
an import from the graph), functions of at most 60 lines and modules of at most 450, tests that
do not import each other, optuna's private API in one adapter (measured with grimp's import
graph and Python's own AST).

DESIGN (keep): `LAYERS` is the package's architecture in one list, top to bottom (the CLI, the
API's verbs, the nouns that do the work, the model code at the bottom); a module may import only
from its own layer or below. A change that needs an upward import is a change of design and
shows up here, not in a review."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nas_attn"
MAX_LINES = 60
"""Longest function, its signature and docstring included."""
MAX_FILE_LINES = 450
"""Longest module."""

# top to bottom: a module may import only from its own layer or the layers below it
LAYERS = (
    "nas_attn.cli",
    "nas_attn.api",
    "nas_attn.planning",
    "nas_attn.searching",
    "nas_attn.exporting.assemble",
    "nas_attn.exporting.formats",
    "nas_attn.exporting.text",
    "nas_attn.training",
    "nas_attn.inference",
    "nas_attn.exporting.values | nas_attn.exporting.verify",
    "nas_attn.data | nas_attn.device | nas_attn.stats",
    "nas_attn.nnunet",
    "nas_attn.architecture",
    "nas_attn.models",
    "nas_attn.paths",
    "nas_attn.atomic",
    "nas_attn.arguments",
    "nas_attn.errors | nas_attn.version | nas_attn.interrupts | nas_attn.notices",
)
"""The export package is split across the list: what writes model.py sits above training, what
loading shares with it (the literal check of an architecture, the export folder's hash record)
sits below the inference package, so that loading a model never reaches the text generator."""
ARCHITECTURE = ("builder", "footprint", "description", "registry")
"""Inside `nas_attn.architecture`, top to bottom: the builder checks a model's footprint and uses
the description and the registry; the description validates attention names in the registry."""


@pytest.fixture(scope="module")
def graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("nas_attn", cache_dir=None)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(adj[w])))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles(graph):
    """Every import counts, at the top of a module or inside a function."""
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    class Fake:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[m]

    assert _cycles(Fake()) == [["a", "b"]]


def _import_strings(tree: ast.AST) -> list[str]:
    """Imports the import graph cannot see: `importlib.import_module(...)`, `__import__(...)`
    and `importlib.util.spec_from_file_location` of the package's own modules (a string
    naming `nas_attn...`, or a relative name starting with a dot)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name not in ("import_module", "__import__"):
            continue
        arg = node.args[0] if node.args else None
        text = ast.unparse(arg) if arg is not None else ""
        if isinstance(arg, (ast.Constant, ast.JoinedStr)) and (
                "nas_attn" in text or text.strip("'\"f").startswith(".")):
            found.append(f"line {node.lineno}: {name}({text})")
        elif not isinstance(arg, ast.Constant):  # a computed name could be anything
            found.append(f"line {node.lineno}: {name}({text})")
    return found


def test_no_import_strings():
    """A hidden import (an import string) would hide a circle from the graph above."""
    bad = {str(p.relative_to(ROOT)): u for p in sorted(PACKAGE.rglob("*.py"))
           if (u := _import_strings(ast.parse(p.read_text())))}
    assert not bad, bad


def test_the_import_string_check_finds_each_kind():
    src = ("import importlib\nimportlib.import_module('nas_attn.api')\n"
           "importlib.import_module(f'.{name}', __name__)\n__import__('nas_attn.x')\n"
           "importlib.import_module(mod)\nimportlib.import_module('yaml')\n")
    assert len(_import_strings(ast.parse(src))) == 4


def test_no_upward_imports(graph):
    layers = [set(x.strip() for x in layer.split("|")) for layer in LAYERS]
    illegal = graph.find_illegal_dependencies_for_layers(
        layers=tuple(layer if len(layer) > 1 else next(iter(layer)) for layer in layers))
    assert not illegal, sorted((d.importer, d.imported) for d in illegal)
    listed = {".".join(m.split(".")[:2]) for layer in layers for m in layer}
    top = {".".join(m.split(".")[:2]) for m in graph.modules if m != "nas_attn"}
    assert top <= listed | {"nas_attn.spaces"}, top - listed


def test_the_command_line_reaches_searching_through_its_public_surface(graph):
    """`nas_attn.cli` imports `nas_attn.searching` (its `__all__`, loaded on first use), never
    one of its modules: the package may move its insides without the command line noticing."""
    inner = {m for m in graph.modules if m.startswith("nas_attn.searching.")}
    cli = {m for m in graph.modules if m.startswith("nas_attn.cli")}
    direct = sorted((c, m) for c in cli for m in graph.find_modules_directly_imported_by(c)
                    if m in inner)
    assert direct == []


def test_every_public_name_of_searching_resolves():
    import nas_attn.searching as searching

    for name in searching.__all__:
        assert getattr(searching, name) is not None, name
    assert set(searching.PUBLIC) <= {p.stem for p in (PACKAGE / "searching").glob("*.py")}
    with pytest.raises(AttributeError):
        searching.not_a_public_name  # noqa: B018


def test_the_architecture_package_keeps_its_order(graph):
    illegal = graph.find_illegal_dependencies_for_layers(
        layers=ARCHITECTURE, containers={"nas_attn.architecture"})
    assert not illegal, sorted((d.importer, d.imported) for d in illegal)
    modules = {m.rsplit(".", 1)[-1] for m in graph.find_children("nas_attn.architecture")}
    assert modules == set(ARCHITECTURE)


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node, lines[node.lineno - 1:node.end_lineno]


def test_no_function_over_60_lines():
    long = [f"{path}:{node.lineno} {node.name} ({len(body)} lines)"
            for path, node, body in _functions() if len(body) > MAX_LINES]
    assert long == []


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_test_files_do_not_import_each_other():
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    bad = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.name}: {n}" for n in names
                    if n.split(".")[-1] in tests or n.startswith("tests.")]
    assert bad == []


OPTUNA_PRIVATE = ("_storage", "_study_id", "_trial_id", "_backend", "_get_stale_trial_ids")


def _optuna_private_uses(tree: ast.AST) -> list[str]:
    """Attributes of optuna objects by their private names, and imports of optuna's private
    modules (`optuna.x._y`), in one module's AST."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                and node.attr not in ("_get_stale_trial_ids",)):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.FunctionDef) and node.name in OPTUNA_PRIVATE:
            found.append(f"line {node.lineno}: def {node.name}")
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("optuna.") and any(p.startswith("_") for p in name.split(".")):
                found.append(f"line {node.lineno}: import {name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.startswith("optuna.") and "._" in node.value:
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_optuna_private_api_only_in_its_adapter():
    """One place to fix when optuna changes (`nas_attn/searching/optuna_adapter.py`)."""
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "optuna_adapter.py":
            continue
        uses = _optuna_private_uses(ast.parse(path.read_text()))
        if uses:
            bad[str(path.relative_to(ROOT))] = uses
    assert not bad, bad


def test_the_private_api_check_finds_each_kind_of_use():
    src = ("from optuna.storages.journal._storage import X\nstudy._storage.get_trial(1)\n"
           "t._trial_id\nlogging.getLogger('optuna.study._optimize')\n"
           "class S:\n    def _get_stale_trial_ids(self, i):\n        return self._backend\n")
    assert len(_optuna_private_uses(ast.parse(src))) == 5


def test_no_private_name_is_imported_across_modules():
    """A helper another module needs is public (named without the underscore) where it lives."""
    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                bad += [f"{p.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


def test_every_package_folder_has_an_init():
    """A folder of modules without __init__.py imports from a checkout (a namespace package)
    but is left out of the wheel (setuptools' find_packages)."""
    missing = sorted(str(d.relative_to(ROOT)) for d in PACKAGE.rglob("*")
                     if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
                     and not (d / "__init__.py").exists())
    assert missing == []
