"""The commands' shared options (--runs-dir, --storage, --cache-dir), and the options of
`nas-attn search` and `nas-attn worker` made from their one declaration in the library
(`nas_attn.searching.request`: `SearchRequest` and `RunOptions`)."""
from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from pathlib import Path
from typing import Optional

import typer

CACHE = typer.Option(None, "--cache-dir", help="Where 3D data folders are decoded to, once, and "
                     "read from patch by patch (default: $NAS_ATTN_CACHE_DIR, else "
                     "<runs-dir>/cache).")


def cache_env(cache_dir: Optional[Path], runs_dir: Path) -> None:
    """The preprocessed cache's folder, for this process and the workers it starts
    (`nas_attn.data.cache`): --cache-dir, else $NAS_ATTN_CACHE_DIR, else <runs-dir>/cache."""
    from ..data.cache import ENV_DIR

    if cache_dir is not None:
        os.environ[ENV_DIR] = str(cache_dir)
    elif not os.environ.get(ENV_DIR):
        os.environ[ENV_DIR] = str(Path(runs_dir) / "cache")


def _cli_type(kind):
    """The command line's type of an option: `X | None` as Optional[X] (`str | Path` as str)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    base = str if len(args) > 1 else args[0]
    return Optional[base] if type(None) in typing.get_args(kind) else base


def typer_option(f: dataclasses.Field, required: bool = False):
    """A typer option made from a search option's field (`nas_attn.searching.request`)."""
    m = f.metadata
    extra = {"min": m["low"]} if m["low"] is not None else {}
    return typer.Option(... if required else m["cli_default"], "--" + f.name.replace("_", "-"),
                        help=m["help"], **extra)


def with_options(*groups, required: tuple[str, ...] = (), only_worker: bool = False,
                 extra: tuple[inspect.Parameter, ...] = ()):
    """Give a command taking `**options` the typer options of these dataclasses' option
    fields (`SearchRequest`, `RunOptions`), in their order, then `extra`; `only_worker`: only
    the options worker processes get. So each option is declared once, in the library."""
    from ..searching import option_types, search_options

    def wrap(fn):
        params = []
        for cls in groups:
            kinds = option_types(cls)
            for f in search_options(cls):
                if only_worker and not f.metadata["worker"]:
                    continue
                kind = _cli_type(kinds[f.name])
                if f.name in required:
                    kind = typing.get_args(kind)[0] if typing.get_args(kind) else kind
                elif f.metadata["cli_default"] is None:
                    kind = Optional[kind]
                params.append(inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                    default=typer_option(f, f.name in required)))
        params += extra
        fn.__signature__ = inspect.Signature(params)
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn
    return wrap


def _request_field(name: str) -> dataclasses.Field:
    from ..searching import SearchRequest

    return next(f for f in dataclasses.fields(SearchRequest) if f.name == name)


RUNS = typer_option(_request_field("runs_dir"))
STORAGE = typer_option(_request_field("storage"))
