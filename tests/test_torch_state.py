"""Fakes of torch's global state cannot outlive their test: torch_state.faked() restores every
fake on its own, and conftest's autouse check fails a test that left one behind, by name, and
puts the real ones back for the tests after it."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch_state

from nas_attn.device import enable_tf32

TESTS = Path(__file__).resolve().parent


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


LEAKY = '''
import torch

from nas_attn.device import enable_tf32


def test_leaks_cuda():
    torch.cuda.is_available = lambda: True


def test_sees_the_real_one():
    assert torch.cuda.is_available.__module__ == "torch.cuda"


def test_leaks_tf32():
    enable_tf32()


def test_flips_cudnn_benchmark():  # as every training does (seed_everything): put back quietly
    torch.backends.cudnn.benchmark = True


def test_sees_real_switches():
    assert torch.backends.cudnn.benchmark is False
    assert torch.get_float32_matmul_precision() == "highest"
'''


def test_a_test_that_leaves_torch_faked_fails_loudly_and_the_next_sees_the_real_one(tmp_path):
    """The real conftest (loaded as a plugin) over a file whose tests leak."""
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                        "-q", "-rA", "test_leaky.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "5 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_leaks_cuda" in out
    assert ("test_leaky.py::test_leaks_cuda left torch globals changed:\n"
            "  torch.cuda.is_available = test_leaks_cuda.<locals>.<lambda> (test_leaky.py:8) "
            "(real: torch.cuda.is_available)\n  put back") in out, out
    assert "ERROR at teardown of test_leaks_tf32" in out
    assert "test_leaky.py::test_leaks_tf32 left torch globals changed:" in out
    tf32 = ("torch.backends.cuda.matmul.fp32_precision" if hasattr(
        torch.backends.cuda.matmul, "fp32_precision") else "torch.backends.cuda.matmul.allow_tf32")
    assert tf32 in out, out
    assert "PASSED test_leaky.py::test_sees_the_real_one" in out
    assert "PASSED test_leaky.py::test_flips_cudnn_benchmark" in out
    assert "PASSED test_leaky.py::test_sees_real_switches" in out
