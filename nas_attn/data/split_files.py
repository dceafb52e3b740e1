"""A dataset folder's own split lists: `splits.json`, or `train.txt` / `val.txt` /
`test.txt` (one file stem a line, `#` comments), validated against the folder's samples. The
rules that choose train / validation / test from them are `nas_attn.data.split`'s."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from . import readers as R

SPLIT_FILES = ("splits.json", "train.txt", "val.txt", "test.txt")


def read_list(path: Path) -> list[str]:
    items = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            items.append(s)
    return items


def _strip_ext(s: str) -> str:
    sn = R.split_name(s)
    return sn[0] if sn else s


def _read_json_splits(js: Path, problems: list[str]) -> dict[str, list[str]] | None:
    """splits.json's lists by split name; None (with the problem) when it cannot be used."""
    try:
        raw = json.loads(js.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"splits.json: not valid JSON ({e})")
        return None
    if not isinstance(raw, dict):
        problems.append('splits.json: expected an object {"train": [...], "val": [...]}')
        return None
    lists: dict[str, list[str]] = {}
    for k, v in raw.items():
        if k not in ("train", "val", "test"):
            problems.append(f"splits.json: unknown key {k!r} (accepted: train, val, test)")
        elif not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            problems.append(f"splits.json: {k!r} must be a list of file stems")
        else:
            lists[k] = [_strip_ext(s) for s in v]
    return lists


def read_splits(root: Path, stems: list[str], problems: list[str]
                ) -> tuple[dict[str, list[str]] | None, str | None]:
    """Explicit train/val lists from splits.json or train.txt/val.txt, validated against `stems`."""
    js, tr, va, te = (root / n for n in SPLIT_FILES)
    if js.exists():
        source = "splits.json"
        if tr.exists() or va.exists() or te.exists():
            problems.append("splits.json and train.txt/val.txt/test.txt both present: keep one")
        lists = _read_json_splits(js, problems)
        if lists is None:
            return None, source
    elif tr.exists() or va.exists() or te.exists():
        source = "train.txt/val.txt/test.txt"
        lists = {}
        for k, p in (("train", tr), ("val", va), ("test", te)):
            if p.exists():
                try:
                    lists[k] = [_strip_ext(s) for s in read_list(p)]
                except (OSError, UnicodeDecodeError) as e:
                    problems.append(f"{p.name}: unreadable ({e})")
    else:
        return None, None
    test = [s for s in lists.get("test", []) if s in set(stems)]
    if "train" not in lists and "val" not in lists:
        if test:  # only a test list: train/val are chosen by the usual rules among the rest
            return {"test": test}, source
        problems.append(f"{source}: neither a train nor a val list")
        return None, source
    known = set(stems)
    fname = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
    for k, v in lists.items():
        where = "splits.json" if source == "splits.json" else fname[k]
        for s, c in Counter(v).items():
            if c > 1:
                problems.append(f"{where}: {s!r} listed {c} times")
        for s in v:
            if s not in known:
                problems.append(f"{where}: {s!r} listed in {k} but there is no such image/mask pair")
    ks = list(lists)
    for i, a in enumerate(ks):
        for b in ks[i + 1:]:
            both = sorted(set(lists[a]) & set(lists[b]))
            if both:
                problems.append(f"{source}: in both {a} and {b}: {', '.join(both)}")
    taken = set().union(*lists.values())
    rest = [s for s in stems if s not in taken]
    train = [s for s in lists.get("train", rest if "val" in lists else []) if s in known]
    val = [s for s in lists.get("val", rest if "train" in lists else []) if s in known]
    for k, v in (("train", train), ("val", val)):
        if not v:
            problems.append(f"{source}: the {k} split is empty")
    out = {"train": train, "val": val}
    if test:
        out["test"] = test
    return out, source
