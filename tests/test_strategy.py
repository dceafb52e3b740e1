"""The strategy seam (nas_attn.searching.strategy): every strategy the spaces accept has the
members the loop asks for, and no code outside a strategy tests a strategy's name."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas_attn.errors import StudyError
from nas_attn.searching.space import STRATEGIES
from nas_attn.searching.strategy import STRATEGY_CLASSES, Strategy, get_strategy

PACKAGE = Path(__file__).resolve().parents[1] / "nas_attn"
MEMBERS = [m for m in Strategy.__dict__ if not m.startswith("_")] + \
    list(Strategy.__annotations__)


def test_every_strategy_the_spaces_accept_has_the_members_the_loop_asks_for():
    assert set(STRATEGY_CLASSES) == set(STRATEGIES)
    for name in STRATEGIES:
        s = get_strategy(name)
        assert s.name == name
        missing = [m for m in MEMBERS if not hasattr(s, m)]
        assert not missing, (name, missing)
    with pytest.raises(StudyError, match="accepted: trials, oneshot"):
        get_strategy("evolution")


def test_no_strategy_name_is_tested_outside_the_strategies():
    test = re.compile(r"""(==|!=|\bin)\s*\(?["'](oneshot|trials)["']|["'](oneshot|trials)["']\s*(==|!=)""")
    found = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE).as_posix()
        if rel.startswith("searching/oneshot/") or rel == "searching/strategy.py":
            continue
        found += [f"{rel}:{i}" for i, line in enumerate(p.read_text().splitlines(), 1)
                  if test.search(line)]
    assert found == [], found


def test_the_check_above_finds_a_test_of_a_name():
    test = re.compile(r"""(==|!=|\bin)\s*\(?["'](oneshot|trials)["']|["'](oneshot|trials)["']\s*(==|!=)""")
    assert test.search('if session.strategy == "oneshot":')
    assert test.search('if kind != "trials":')
    assert test.search('if "oneshot" == s.strategy:')
    assert not test.search("plan = get_strategy(strategy)")
    assert not test.search("if req.strategy and req.strategy != stored:")
