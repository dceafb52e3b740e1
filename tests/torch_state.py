"""The torch globals that tests fake or that the code under test switches: torch.cuda's device
functions, the TF32 and cuDNN switches. Read them (`snapshot`), put them back (`restore`), fake
them for a block (`faked`).

`REAL` is their state when this module is first imported (conftest imports it, before any test
runs); conftest's autouse check compares after every test and fails a test that left one
changed. Two groups:

- FAKED: replaced only by fakes (`torch.cuda.is_available`, ...) or set only by the CUDA path
  (TF32, `cudnn.enabled`): a test that leaves one changed fails.
- RESET: set by the library on every training (`seed_everything`: cuDNN benchmark and
  deterministic modes): put back quietly, so that no test sees another's.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

_CUDA_FUNCTIONS = ("is_available", "device_count", "current_device", "set_device", "device",
                   "is_bf16_supported", "get_device_capability", "get_device_properties",
                   "get_device_name", "synchronize", "empty_cache", "mem_get_info",
                   "memory_allocated", "max_memory_allocated", "reset_peak_memory_stats")

Entry = tuple[str, Callable[[], Any], Callable[[Any], None]]  # name, read, write


def _attr(obj: Any, attr: str, name: str) -> Entry:
    return name, (lambda: getattr(obj, attr)), (lambda v: setattr(obj, attr, v))


def _faked_entries() -> list[Entry]:
    out = [_attr(torch.cuda, f, f"torch.cuda.{f}") for f in _CUDA_FUNCTIONS
           if hasattr(torch.cuda, f)]
    out.append(_attr(torch.backends.mps, "is_available", "torch.backends.mps.is_available"))
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    # the legacy switches first: their setters also set the fp32_precision settings below, and
    # torch >= 2.9 keeps them as state of their own (its legacy getters raise when the two
    # disagree, which is then the value read); children after parents, whose setters set them
    out += [("torch.get_float32_matmul_precision()", torch.get_float32_matmul_precision,
             torch.set_float32_matmul_precision),
            _attr(matmul, "allow_tf32", "torch.backends.cuda.matmul.allow_tf32"),
            _attr(cudnn, "allow_tf32", "torch.backends.cudnn.allow_tf32")]
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        out += [_attr(torch.backends, "fp32_precision", "torch.backends.fp32_precision"),
                _attr(matmul, "fp32_precision", "torch.backends.cuda.matmul.fp32_precision"),
                _attr(cudnn, "fp32_precision", "torch.backends.cudnn.fp32_precision"),
                _attr(cudnn.conv, "fp32_precision", "torch.backends.cudnn.conv.fp32_precision"),
                _attr(cudnn.rnn, "fp32_precision", "torch.backends.cudnn.rnn.fp32_precision")]
    out.append(_attr(cudnn, "enabled", "torch.backends.cudnn.enabled"))
    return out


def _set_deterministic(v: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(v[0], warn_only=v[1])


RESET: list[Entry] = [
    _attr(torch.backends.cudnn, "benchmark", "torch.backends.cudnn.benchmark"),
    _attr(torch.backends.cudnn, "deterministic", "torch.backends.cudnn.deterministic"),
    ("torch.use_deterministic_algorithms",
     lambda: (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled()), _set_deterministic),
]
FAKED: list[Entry] = _faked_entries()
ENTRIES: list[Entry] = FAKED + RESET


class RestoreError(AssertionError):
    """Some globals could not be put back (each was tried; the message lists the failures)."""


def _read(get: Callable[[], Any]) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecated getter's warning is not for the test
            return get()
    except Exception as e:  # e.g. torch's "mix of the legacy and new APIs" on a TF32 getter
        return f"<{type(e).__name__} when read: {str(e)[:120]}>"


def snapshot() -> dict[str, Any]:
    """The current value of every global (an object for functions, a value for switches)."""
    return {name: _read(get) for name, get, _ in ENTRIES}


REAL = snapshot()


def describe(v: Any) -> str:
    """A value as a person can find it: torch's functions by name, others (fakes) by name and
    the file and line where they were written."""
    if not callable(v):
        return repr(v)
    name = getattr(v, "__qualname__", None) or repr(v)
    module = getattr(v, "__module__", None) or ""
    code = getattr(v, "__code__", None)
    if module.split(".")[0] == "torch" or code is None:
        return f"{module}.{name}" if module else name
    where = code.co_filename
    if os.path.isabs(where) and not os.path.relpath(where).startswith(".."):
        where = os.path.relpath(where)
    return f"{name} ({where}:{code.co_firstlineno})"


def restore(saved: dict[str, Any], entries: list[Entry] | None = None) -> tuple[
        list[str], list[str]]:
    """Put back every global that differs from `saved`, each on its own: one that fails does not
    stop the others. Returns (the ones that differed, "name: value found"; the ones that could
    not be put back, "name: error")."""
    entries = ENTRIES if entries is None else entries
    found = {name: _read(get) for name, get, _ in entries}
    changed = [f"{name} = {describe(v)} (real: {describe(saved[name])})"
               for name, v in found.items() if not (v is saved[name] or v == saved[name])]
    failed = []
    for name, get, put in entries:
        now = _read(get)  # read at its turn: a switch put back before it may have set it too
        if now is saved[name] or now == saved[name]:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                put(saved[name])
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
    for name, get, _ in entries:
        now = _read(get)
        if not (now is saved[name] or now == saved[name]) and not any(
                f.startswith(f"{name}:") for f in failed):
            failed.append(f"{name}: still {describe(now)} after putting it back")
    return changed, failed


def restore_real() -> tuple[list[str], list[str]]:
    """After a test: (FAKED globals it left changed; those that could not be put back). The
    RESET ones are put back without being reported."""
    restore(REAL, RESET)
    return restore(REAL, FAKED)


@contextlib.contextmanager
def faked() -> Iterator[Callable[[Any, str, Any], None]]:
    """`with faked() as fake: fake(torch.cuda, "is_available", lambda: True)`: the attribute is
    replaced for the block.

    At the end each faked attribute is put back, with the value it had (read with getattr, so an
    attribute a module serves through `__getattr__`, like `torch.backends.cuda.matmul`'s, is set
    back, never deleted), and then every global of this module that differs from before the
    block, such as TF32 switches that the code under test turned on, is put back through its
    setter. Each restore is on its own: one that fails does not stop the others, and the
    failures are raised together afterwards (RestoreError)."""
    saved = snapshot()
    undo: list[tuple[str, Callable[[], None]]] = []

    def fake(target: Any, attr: str, value: Any) -> None:
        old = getattr(target, attr)
        label = f"{getattr(target, '__name__', type(target).__name__)}.{attr}"
        undo.append((label, lambda: setattr(target, attr, old)))
        setattr(target, attr, value)

    try:
        yield fake
    finally:
        failed = []
        for label, put_back in reversed(undo):
            try:
                put_back()
            except Exception as e:
                failed.append(f"{label}: {type(e).__name__}: {e}")
        failed += restore(saved)[1]
        if failed:
            raise RestoreError("could not put back: " + "; ".join(failed))
