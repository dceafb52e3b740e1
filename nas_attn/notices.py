"""Lines the library wants a person to see while it works (the progress of a long step that
prints nothing else, such as building the preprocessed cache). Library code calls
`notice(line)`; the command line sets `PRINT` to print them (`nas_attn.cli.app.main`); from
Python they are silent unless `PRINT` is set. A module of its own, light to import, so that
the command line can set it without importing the data code (and torch) at start."""
from __future__ import annotations

from typing import Callable, Optional

PRINT: Optional[Callable[[str], None]] = None
"""A function of one line of text, or None: silent."""


def notice(line: str) -> None:
    if PRINT is not None:
        PRINT(line)
