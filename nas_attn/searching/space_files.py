"""Reading search spaces: a ready space by name or a YAML file (size, encoding and file type
checked before parsing), parsed and validated into a `Space` with one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpaceError
from .space import SPACES_DIR, Space, first_errors


def parse_space(data: Any, source: str = "<space>") -> Space:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a search space must be a YAML mapping, got "
                         f"{type(data).__name__}")
    try:
        return Space(**data)
    except ValidationError as e:
        raise SpaceError(f"{source}: invalid search space: {first_errors(e)}") from None


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a ready space (`default`, `smoke`, ...)."""
    if isinstance(name_or_path, bool) or not isinstance(name_or_path, (str, Path)) or \
            not str(name_or_path):
        raise SpaceError(f"a search space is a ready space's name or the path of a YAML file, "
                         f"got {type(name_or_path).__name__} {name_or_path!r}")
    p = Path(name_or_path)
    if p.exists():
        return p
    for cand in (SPACES_DIR / f"{name_or_path}.yaml", SPACES_DIR / str(name_or_path)):
        if cand.exists():
            return cand
    ready = ", ".join(sorted(q.stem for q in SPACES_DIR.glob("*.yaml")))
    raise SpaceError(f"search space {str(name_or_path)!r} not found: no such file, and not a "
                     f"ready space ({ready})")


MAX_SPACE_BYTES = 1 << 20


def read_space_text(path: Path) -> str:
    """A space file's text: a regular file of at most 1 MiB of UTF-8 (a device such as
    /dev/zero, a huge or a binary file gets one line, not an endless read)."""
    try:
        if not path.is_file():
            raise SpaceError(f"{path}: not a regular file; a search space is a YAML file")
        with open(path, "rb") as f:
            raw = f.read(MAX_SPACE_BYTES + 1)
    except OSError as e:
        raise SpaceError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_SPACE_BYTES:
        raise SpaceError(f"{path}: larger than {MAX_SPACE_BYTES >> 20} MiB; a search space is "
                         "a small YAML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                         f"{e.start}); save the space as UTF-8") from None


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the second silently
    replaced the first, a whole block of a space lost without a word)."""


def _mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice (first on line {seen[key]}); the "
                "second would silently replace the first", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_space(name_or_path: str | Path) -> Space:
    path = resolve_space_path(name_or_path)
    text = read_space_text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeys)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}:{where}: not valid YAML: "
                         f"{getattr(e, 'problem', None) or e}") from None
    return parse_space(data, str(path))


def space_description(path: Path) -> str:
    """The description field, else the first header comment line."""
    try:
        text = read_space_text(path)
        data = yaml.safe_load(text) or {}
        if isinstance(data, dict) and data.get("description"):
            return str(data["description"]).strip().splitlines()[0]
    except (SpaceError, yaml.YAMLError):
        return ""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
