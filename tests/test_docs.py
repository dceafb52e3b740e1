"""The README stays a short front page whose links land on documentation pages, and every
page of the documentation site is in its navigation (`mkdocs build --strict` in .ci/run checks
the links inside the site)."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                out += _nav_files(v) if isinstance(v, list) else [v]
    return out


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, missing


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav, (pages - nav, nav - pages)


def test_every_results_marker_names_a_results_file():
    markers = []
    for page in (ROOT / "docs").rglob("*.md"):
        markers += re.findall(r"<!-- results: ([\w.-]+) -->", page.read_text())
    assert markers
    for name in markers:
        assert (ROOT / "benchmarks" / "results" / f"{name}.json").exists(), name


def test_every_benchmark_page_shows_tables_from_results_files():
    """Issue 38: a benchmark page shows the tables built from its script's result files, not
    figures copied from a terminal; records of older runs live outside the benchmark pages."""
    pages = sorted((ROOT / "docs" / "benchmarks").glob("*.md"))
    bare = [p.name for p in pages if p.name != "index.md"
            and not re.search(r"<!-- results: [\w.-]+ -->", p.read_text())]
    assert len(pages) > 5 and not bare, bare


def test_a_benchmark_results_file_renders_as_its_tables(tmp_path, monkeypatch):
    """What a benchmark script writes with `--out` (benchmarks/results_file.py: the printed
    tables, the raw numbers, the date, commit, machine and command) is shown by render() as
    markdown tables with that header, for a file without a renderer of its own."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import render
    import results_file

    monkeypatch.setattr(render, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/demo.py", "--size", "32", "--out", "a b.json"])
    cost = results_file.table("Cost of a step", ["module", "time ×", "met"],
                              [["se", "1.12", "yes"], ["cbam", "1.51", "NO | 1.3×"]],
                              ["plain UNet: 0.350 s a step"])
    path = results_file.write(tmp_path / "demo_bench.json", "demo_bench", {"size": 32},
                              {"se": 1.1234}, [cost], device="cpu")
    d = json.loads(path.read_text())
    assert list(tmp_path.iterdir()) == [path]  # written through a temporary file, renamed
    assert d["results"] == {"se": 1.1234} and d["args"] == {"size": 32}
    assert d["command"] == "python benchmarks/demo_bench.py --size 32 --out 'a b.json'"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", d["date"])
    if shutil.which("git") and (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{4,40}", d["commit"]), d["commit"]
    lines = render.render("demo_bench").splitlines()
    assert lines[0] == (f"Measured {d['date']} at commit `{d['commit']}` on {d['machine']}, "
                        f"device cpu: `{d['command']}`")
    i = lines.index("**Cost of a step**")
    assert lines[i + 2:i + 6] == ["| module | time × | met |", "|---|---|---|",
                                  "| se | 1.12 | yes |", "| cbam | 1.51 | NO \\| 1.3× |"]
    assert "- plain UNet: 0.350 s a step" in lines
    with pytest.raises(ValueError, match="cells"):  # a row that does not fit its columns
        results_file.write(tmp_path / "bad.json", "bad", {}, {},
                           [results_file.table("t", ["a", "b"], [["1"]])])
