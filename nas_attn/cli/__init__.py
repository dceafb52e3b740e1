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
    """The `nas-attn` entry point. A Ctrl-C at any time ends it with one line and exit code
    130: also while the command is still starting (importing torch can take many seconds on a
    loaded machine), and a second Ctrl-C during the clean-up of the first (exit hooks run with
    SIGINT ignored once the command was interrupted)."""
    lost = _keep_lost_interrupts()
    try:
        from .app import main as run

        if lost:  # a Ctrl-C during the imports that Python printed and dropped
            raise KeyboardInterrupt
        run(argv)
    except KeyboardInterrupt:
        _quiet_exit_hooks()
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130:
            _quiet_exit_hooks()
        raise


def _keep_lost_interrupts() -> list[BaseException]:
    """A Ctrl-C that lands in a callback of the import machinery (a weakref callback of
    importlib's module locks) is not raised: Python prints "Exception ignored ... Traceback"
    and goes on, and the command would run to its end. Such interrupts are kept instead (the
    returned list), without the traceback; other unraisable errors are printed as before."""
    lost: list[BaseException] = []
    default = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            lost.append(unraisable.exc_value)
            return
        default(unraisable)

    sys.unraisablehook = hook
    return lost


def _quiet_exit_hooks() -> None:
    import atexit
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # also for the rest of this handler
        # registered last, so it runs first: the exit hooks after it run without SIGINT
        atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)


def __getattr__(name: str):
    if name == "app":
        from .app import app

        return app
    raise AttributeError(name)
