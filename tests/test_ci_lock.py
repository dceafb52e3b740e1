"""CI's lock (.ci/constraints.txt, written by .ci/lock): plain PyPI pins of the dependencies,
never of the project itself, and the README's "Tested versions" says the same versions."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z0-9][a-z0-9.-]*)==([0-9][0-9a-z.!]*)", line)
        assert m, f"not a plain name==version pin (no editable, URL or local +label): {line!r}"
        assert m[1] == canonicalize_name(m[1]), line
        pins[m[1]] = m[2]
    return pins


@pytest.mark.skipif(not LOCK.exists(), reason="no .ci/constraints.txt in this checkout")
def test_lock_pins_every_dependency_and_not_the_project():
    pins = _pins()
    assert "nas-attn" not in pins  # installed from the checkout: `pip install -c ... -e .`
    direct = [r for r in map(Requirement, importlib.metadata.requires("nas-attn") or [])
              if not r.marker or r.marker.evaluate({"extra": "dev"})]
    missing = [str(r) for r in direct if canonicalize_name(r.name) not in pins]
    assert not missing, f"run `bash .ci/lock` after adding a dependency: {missing}"
    for r in direct:  # the lock satisfies pyproject's own ranges
        assert r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True), r


@pytest.mark.skipif(not LOCK.exists(), reason="no .ci/constraints.txt in this checkout")
def test_readme_names_the_locked_versions():
    pins = _pins()
    text = (ROOT / "README.md").read_text()
    section = text.split("### Tested versions", 1)[1].split("\n#", 1)[0]
    named = re.findall(r"\b(torch|torchvision|timm|optuna|numpy|pytest) (\d[\w.]*\d)", section)
    assert {n for n, _ in named} >= {"torch", "pytest"}, section
    assert {n: pins[n] for n, _ in named} == dict(named), "README's Tested versions vs the lock"
