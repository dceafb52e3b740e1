"""MkDocs hook: every `<!-- results: NAME -->` marker in a page becomes the table that
benchmarks/render.py builds from benchmarks/results/NAME.json (its date, commit, machine and the
command that produced it), so no benchmark figure in the documentation is typed by hand. A
marker whose results file is missing or unreadable fails the build."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- results: ([\w.-]+) -->")


def on_page_markdown(markdown, page, config, files):
    if "<!-- results:" not in markdown:
        return markdown
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from render import render

    def table(m):
        try:
            return render(m.group(1))
        except Exception as e:  # noqa: BLE001 - the build fails with the page and the name
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_path}: results {m.group(1)!r}: "
                              f"{type(e).__name__}: {e}") from e

    return MARKER.sub(table, markdown)
