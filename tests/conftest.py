"""Shared fixtures: the CLI run in-process, a tiny search space, a search session on it, and the
throwaway PostgreSQL server of `pg.py`."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import optuna
import pytest

import torch_state  # before any test: torch_state.REAL is read on import
from pg import pg_url  # noqa: F401  (fixture: a throwaway PostgreSQL server)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 3D folders are read through the preprocessed cache (nas_attn.data.cache): the suite's go to a
# folder of its own, never to runs/cache of the checkout (set before any test, so the
# environment guard below sees it unchanged; subprocesses inherit it)
if not os.environ.get("NAS_ATTN_CACHE_DIR"):
    import atexit
    import shutil
    import tempfile

    _CACHE_DIR = tempfile.mkdtemp(prefix="nas-attn-test-cache-")
    os.environ["NAS_ATTN_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, True)


@pytest.fixture(autouse=True)
def _torch_globals_are_real(request):
    """After each test (and its fixtures' teardown): torch.cuda's functions and the TF32/cuDNN
    switches are the real ones (torch_state.py). A test that left one changed fails here, named
    with what it left, and the real ones are put back, so that it cannot poison the tests after
    it. Fake them with monkeypatch or torch_state.faked(), inside the test or its fixtures."""
    yield
    changed, failed = torch_state.restore_real()
    if changed or failed:
        pytest.fail(f"{request.node.nodeid} left torch globals changed:\n  " + "\n  ".join(changed)
                    + ("\n  put back" if not failed else "\n  could not put back: "
                       + "; ".join(failed)), pytrace=False)


@pytest.fixture(autouse=True)
def _signal_handlers_are_unchanged(request):
    """After each test: SIGINT and SIGTERM are handled as before it. A command interrupted
    in-process ignores both from then on (`nas_attn.cli`); left so in this process, every child
    a later test starts inherits the ignored SIGINT, and a test that interrupts its child saw a
    search run to its end with exit 0 (seen twice under load). Put back, and the test named."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    after = {s: signal.getsignal(s) for s in before}
    if after != before:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        changed = sorted(signal.Signals(s).name for s in before if after[s] != before[s])
        pytest.fail(f"{request.node.nodeid} left the handler of {', '.join(changed)} changed "
                    "(put back; run the CLI through the `cli` fixture, or save and restore "
                    "the handlers in the test)", pytrace=False)


@pytest.fixture(autouse=True)
def _nas_attn_environment_is_unchanged(request):
    """After each test: the NAS_ATTN_* environment variables are what they were before it. The
    CLI makes options such as --grace-period the defaults of its process through them (and so of
    every worker a later test starts in this process): a grace period of 2 s left behind by one
    test made another's workers take each other for dead under load."""
    before = {k: v for k, v in os.environ.items() if k.startswith("NAS_ATTN_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("NAS_ATTN_")}
    if after != before:
        for k in set(after) - set(before):
            del os.environ[k]
        os.environ.update(before)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        pytest.fail(f"{request.node.nodeid} left environment variables changed: "
                    f"{', '.join(changed)} (put back; run the CLI through the `cli` fixture, or "
                    "use monkeypatch.setenv)", pytrace=False)


# one level, two sites (encoder.0, skip.0) with two choices each: two fixed baselines
TINY_SPACE = """
macro: {depth: [1], base_width: [4]}
encoder: {choices: [none, se]}
skip: {choices: [none, gate]}
training: {batch_size: 4, lr: 0.005}
budget: {epochs: 1, samples_per_epoch: 4}
data: {source: builtin, builtin_n: 6, builtin_size: 24}
search: {trials: 2, n_startup_trials: 1}
"""


@pytest.fixture
def cli(capsys):
    """`cli(*args)` runs `nas-attn ARGS` in this process: (exit code, stdout + stderr). The
    environment variables the CLI sets for its workers (--heartbeat-interval ...) are put back at
    the end of the test."""
    from nas_attn.cli import main

    saved = dict(os.environ)

    def run(*args):
        code = 0
        # an interrupted command ignores SIGINT and SIGTERM after: not this test process
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        out = capsys.readouterr()
        return code, out.out + out.err

    yield run
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def tiny_space() -> str:
    """The YAML text of a space whose trials take a second (see TINY_SPACE)."""
    return TINY_SPACE


@pytest.fixture
def write_space(tmp_path):
    """`write_space(text, name="space.yaml")`: the (dedented) text in a file under tmp_path."""
    def write(text: str, name: str = "space.yaml"):
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


@pytest.fixture
def session(tmp_path, write_space):
    """`session(text=TINY_SPACE, **request)`: an opened search (study "t") under tmp_path/runs."""
    from nas_attn.searching.opening import SearchRequest, open_search

    def open_(text: str = TINY_SPACE, **kw):
        return open_search(SearchRequest(space=write_space(text), runs_dir=tmp_path / "runs",
                                         study="t", **kw))

    return open_


@pytest.fixture
def every_site_arch():
    """`every_site_arch(**fields)`: a depth-3 UNetArch with a different module at every site."""
    from nas_attn.architecture.description import AttnSpec, UNetArch

    def make(**kw):
        A = AttnSpec.make
        return UNetArch(
            depth=3, widths=(8, 16, 32, 64),
            encoder=(A("se", reduction=4), A("cbam"), A("position", max_tokens=64)),
            bottleneck=A("self", heads=2),
            skip=(A("gate", resample="fine"), A("cross"), A("eca")),
            decoder=(A("scse"), A("dual"), A("spatial", kernel_size=3)), **kw)

    return make


@contextlib.contextmanager
def _tmpfs_mount(mnt, options: str = "size=1m"):
    """A real tmpfs mounted at the (new) folder `mnt` with mount `options` for the `with`
    block, unmounted afterwards; the test is skipped where mounting is not allowed (not root,
    a container without the capability, not Linux)."""
    mnt.mkdir()
    if sys.platform != "linux":
        pytest.skip("needs Linux tmpfs")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                           capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs ({options}): {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}; needs root, or a container that allows "
                    f"mount): {(r.stderr or r.stdout).strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def tmpfs():
    """`with tmpfs(folder, options="size=1m") as mnt:` a real tmpfs there (skip if impossible)."""
    return _tmpfs_mount
