"""Fakes of torch's global state cannot outlive their test: torch_state.faked() restores every
fake on its own, whatever fails."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch_state

from nas_attn.device import enable_tf32


class _Stubborn:
    """An attribute that can be faked but not put back."""

    value = 1

    def __setattr__(self, name, v):
        if name == "value" and v == 1:
            raise AttributeError("value is read-only now")
        object.__setattr__(self, name, v)


def test_a_restore_that_fails_does_not_stop_the_others():
    real_available, real_device = torch.cuda.is_available, torch.cuda.device
    matmul = torch.backends.cuda.matmul
    fp16_accumulation = matmul.allow_fp16_accumulation  # served by cuBLASModule.__getattr__
    before = torch_state.snapshot()
    with pytest.raises(torch_state.RestoreError, match=r"_Stubborn\.value: AttributeError"), \
            torch_state.faked() as fake:
        fake(torch.cuda, "is_available", lambda: True)
        fake(matmul, "allow_fp16_accumulation", not fp16_accumulation)
        fake(_Stubborn(), "value", 2)  # put back between the others, and fails
        fake(torch.cuda, "device", lambda d: contextlib.nullcontext())
        enable_tf32()  # switched by the code under test, not faked
        assert torch.cuda.is_available() and torch_state.snapshot() != before
    assert torch.cuda.is_available is real_available and torch.cuda.device is real_device
    assert matmul.allow_fp16_accumulation == fp16_accumulation  # set back, not deleted
    assert torch_state.snapshot() == before


def test_a_failing_switch_setter_does_not_stop_the_others():
    entries = [("broken", lambda: "changed", lambda v: 1 / 0)] + torch_state.ENTRIES
    saved = {"broken": "real", **torch_state.snapshot()}
    real_available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    enable_tf32()
    changed, failed = torch_state.restore(saved, entries)
    assert torch.cuda.is_available is real_available
    assert torch_state.snapshot() == torch_state.REAL
    assert failed == ["broken: ZeroDivisionError: division by zero"]
    fake = "test_a_failing_switch_setter_does_not_stop_the_others.<locals>.<lambda>"
    assert f"torch.cuda.is_available = {fake} (tests/test_torch_state.py:" in "\n".join(changed)

