"""The `nas-attn` command line: a thin layer over the library (`nas_attn.api` and the modules it
calls) that parses options, draws progress and tables with rich, and turns a `NasAttnError` into
one line on stderr and exit code 2. Not meant to be called from Python: use `import nas_attn`.

- `app`     the typer commands (options -> library calls)
- `search`  live view of a search, `show`, `finalize`
- `workers` the parent's live view over worker processes
- `train`, `export`, `predict`, `data`: the views of those commands
"""
from __future__ import annotations

import sys

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The `nas-attn` entry point. SIGINT (Ctrl-C) and SIGTERM stop it at any moment, also while
    the command is still starting (importing torch can take many seconds on a loaded machine):
    `nas_attn.interrupts` (never ignored, delivered again when Python drops one, clean-up
    bounded), one line and exit code 130 (143 for SIGTERM).

    `argv` None is the process's own command line (the console script, `python -m`): then an
    interrupted command ends with `os._exit` after the exit hooks, because CPython kills itself
    with SIGINT at exit (exit status -2, not 143) when the interrupt was raised inside code run
    through `PyRun_*` (some extension modules' imports), even though it was caught. With an
    `argv` list (tests, embedding) it ends with `SystemExit`."""
    from .. import interrupts

    previous = interrupts.install()
    try:
        from .app import main as run

        run(argv)
    except KeyboardInterrupt:  # before a command ran (typer turns one inside into Exit(130))
        _stopped(argv is None)
    except SystemExit as e:
        # typer's Exit(130) for an interrupt the command did not catch, or a command that
        # went on after one (a dropped interrupt it never saw): it ends as interrupted
        signalled = interrupts.interrupted() is not None
        if e.code == 130 or (signalled and (e.code or not interrupts.acknowledged())):
            _stopped(argv is None)
        raise
    finally:
        if argv is not None:  # a command inside a longer-lived process (tests, embedding)
            interrupts.uninstall(previous)


def _stopped(whole_process: bool) -> None:
    """The end of an interrupted command: one line unless it said what stopped, the exit code
    of its signal (130 for SIGINT, 143 for SIGTERM)."""
    from .. import interrupts

    code = interrupts.acknowledge()
    if not interrupts.said():
        sys.stderr.write("interrupted\n")
    if whole_process:
        import atexit
        import os

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def __getattr__(name: str):
    if name == "app":
        from .app import app

        return app
    raise AttributeError(name)
