"""A benchmark's results file: what the script printed, as tables of the same formatted cells,
beside the raw numbers, with the date, the commit, the machine and the command that produced
it. `benchmarks/render.py` builds the documentation's tables from it (no figure typed by hand).

    {"benchmark": NAME, "date", "commit", "machine", "python", "torch", "device",
     "command": "python benchmarks/NAME.py ARGS", "args": {...}, "results": {...},
     "tables": [{"title": str, "columns": [str, ...], "rows": [[str, ...], ...],
                 "notes": [str, ...]}, ...]}
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def provenance(device: str | None = None) -> dict:
    """Date, short commit, machine (arch, cores, OS), python and torch versions, and the device
    the run used when known. Reads the torch version without importing torch."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
           "python": platform.python_version()}
    try:
        from importlib.metadata import version

        out["torch"] = version("torch")
    except Exception:  # noqa: BLE001 - no torch, or no metadata for it: nothing to record
        pass
    if device:
        out["device"] = str(device)
    return out


def table(title: str, columns: list[str], rows: list[list] | None = None,
          notes: list[str] | None = None) -> dict:
    """One table as the script printed it: its cells are the formatted strings."""
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows or []],
            "notes": list(notes or [])}


def command(benchmark: str, argv: list[str] | None = None) -> str:
    """The script's command line (its arguments as given, `--out` included)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return f"python benchmarks/{benchmark}.py" + (f" {shlex.join(args)}" if args else "")


def _checked(tables: list[dict]) -> list[dict]:
    out = []
    for t in tables:
        cols = [str(c) for c in t["columns"]]
        rows = [[str(c) for c in r] for r in t.get("rows", [])]
        bad = [r for r in rows if len(r) != len(cols)]
        if bad:
            raise ValueError(f"table {t.get('title')!r}: row {bad[0]} has {len(bad[0])} cells "
                             f"for {len(cols)} columns")
        out.append({"title": str(t.get("title", "")), "columns": cols, "rows": rows,
                    "notes": [str(n) for n in t.get("notes", [])]})
    return out


def write(path, benchmark: str, args: dict, results: dict, tables: list[dict], *,
          device: str | None = None, argv: list[str] | None = None) -> Path:
    """Write the results file atomically (a temporary file beside it, then renamed): a run cut
    short leaves the old file or the new one, never half of one. Returns its path."""
    path = Path(path)
    doc = {"benchmark": benchmark, **provenance(device), "command": command(benchmark, argv),
           "args": args, "results": results, "tables": _checked(tables)}
    text = json.dumps(doc, indent=1, default=str)  # Paths, tuples and the like as text
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path
