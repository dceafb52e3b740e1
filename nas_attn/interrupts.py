"""How SIGINT (Ctrl-C) and SIGTERM (`kill`, `timeout`, batch schedulers) stop a command: always,
within seconds, with its work kept.

- The first signal raises `KeyboardInterrupt` in the main thread, where the command turns it into
  a clean stop (the running trial recorded as failed, a supernet's `resume.pt` kept, one line
  saying what was interrupted) and calls `acknowledge()`.
- Signals are never ignored. Python can lose the `KeyboardInterrupt`: raised inside a weakref
  callback or a `__del__` (SQLAlchemy's pool, importlib's module locks), it is reported as
  "unraisable" and the code goes on (a search sent SIGTERM ran 107 more trials). A watchdog
  thread therefore delivers the signal again to the main thread (`signal.pthread_kill`, which
  also wakes a blocking call) every `REDELIVER_S` seconds until the command acknowledges it,
  at once when the unraisable hook saw it dropped (the hook also keeps its traceback off the
  terminal).
- Once acknowledged, a further signal does not break the clean-up (that printed tracebacks
  from clean-up code); but clean-up is never waited for long: a signal after `GRACE_S`
  seconds of clean-up, a second signal during it, or `CLEANUP_LIMIT_S` seconds of clean-up
  end the process at once (`os._exit`) with one line.
- The exit code is 130 for SIGINT and 143 for SIGTERM (128 + the signal).

`install()` is called first thing by the command line and by every worker process; off the
main thread it does nothing (signals cannot be set there).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

REDELIVER_S = 3.0
"""Without an acknowledgement, the signal is delivered again this often."""
GRACE_S = 3.0
"""A further signal within this much clean-up is left to the clean-up; later, it ends it."""
CLEANUP_LIMIT_S = 90.0
"""The longest clean-up after a signal before the process ends on its own (longer than a
search parent waits for its interrupted workers, 60 s)."""


class _State:
    def __init__(self):
        self.signum: int | None = None
        self.first = 0.0
        self.acked: float | None = None
        self.said = False
        self.during_cleanup = 0
        self.raise_next = False
        self.deferring = False
        self.lost = threading.Event()
        self.watchdog: threading.Thread | None = None
        self.main_ident: int | None = None


STATE = _State()


def install() -> dict | None:
    """The handlers and the unraisable hook (module docstring), for a command that starts now
    (an earlier interrupt in this process is forgotten). Returns what they replaced, for
    `uninstall` (None off the main thread, where signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    reset()
    STATE.main_ident = threading.main_thread().ident
    previous = {signum: signal.signal(signum, _handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    default = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            STATE.lost.set()  # dropped: the watchdog delivers it again now
            return
        default(unraisable)

    sys.unraisablehook = hook
    return {"signals": previous, "unraisablehook": default}


def uninstall(previous: dict | None) -> None:
    """Put back what `install` replaced (a command run inside a longer-lived process)."""
    if not previous:
        return
    for signum, handler in previous["signals"].items():
        signal.signal(signum, handler)
    sys.unraisablehook = previous["unraisablehook"]
    reset()


def interrupted() -> int | None:
    """The signal that interrupted this process, if any."""
    return STATE.signum


def acknowledge(said: bool = False) -> int:
    """The command caught the interrupt and cleans up: no more re-delivery (`said`: it printed
    what was interrupted). Returns the exit code to end with (130, or 143 for SIGTERM)."""
    if STATE.acked is None:
        STATE.acked = time.monotonic()
    STATE.said = STATE.said or said
    return exit_code()


def acknowledged() -> bool:
    """Whether the command caught the interrupt (and so ends as it decided)."""
    return STATE.acked is not None


def said() -> bool:
    """Whether the command told the user what the interrupt stopped."""
    return STATE.said


@contextlib.contextmanager
def second_raises():
    """Within: a further signal raises KeyboardInterrupt again (once), so that a clean-up that
    waits (a search parent waiting for its interrupted workers) can be told to stop waiting."""
    STATE.raise_next = True
    try:
        yield
    finally:
        STATE.raise_next = False


@contextlib.contextmanager
def deferred():
    """Within (a short storage call whose effect the caller must record, such as creating a
    trial): a signal is noted but raised only at the end, as KeyboardInterrupt, so that the
    call and its record are not cut apart. Off the main thread it does nothing (signals are
    handled there)."""
    if threading.current_thread() is not threading.main_thread() or STATE.deferring:
        yield
        return
    STATE.deferring = True
    try:
        yield
    finally:
        STATE.deferring = False
    if STATE.signum is not None and STATE.acked is None:
        raise KeyboardInterrupt


def masks_interrupt(error: BaseException) -> bool:
    """Whether `error` stands in for a signal: library clean-up that ran when the
    KeyboardInterrupt passed through it and failed in turn (optuna's journal-file lock, hit
    between its rename and its unlink, raises FileNotFoundError with the interrupt as its
    context), or any error raised while a signal waits unacknowledged."""
    if STATE.signum is not None and STATE.acked is None:
        return True
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def surfaced():
    """Within: an error that `masks_interrupt` is raised as the KeyboardInterrupt it hides,
    so that the command stops as for the signal (not with the library's unrelated error)."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if masks_interrupt(e):
            raise KeyboardInterrupt() from e
        raise


def reason() -> str:
    """What a trial the signal stopped records as its `fail_reason`."""
    if STATE.signum == signal.SIGTERM:
        return "interrupted by SIGTERM (kill, timeout or the batch scheduler)"
    return "interrupted by the user (Ctrl-C)"


def exit_code() -> int:
    return 128 + (STATE.signum or signal.SIGINT)


def reset() -> None:
    """Forget an interrupt (tests that run several commands in one process)."""
    STATE.signum, STATE.acked, STATE.said = None, None, False
    STATE.during_cleanup = 0
    STATE.lost.clear()


def _handler(signum, frame) -> None:
    s = STATE
    if s.signum is None:
        s.signum, s.first = signum, time.monotonic()
        _start_watchdog()
        if s.deferring:  # raised when the deferred call returns (`deferred`)
            return
        raise KeyboardInterrupt
    if s.acked is None:  # the first one was lost, or this is the watchdog's re-delivery
        if s.deferring:
            return
        raise KeyboardInterrupt
    if s.raise_next:  # the clean-up asked for it (`second_raises`)
        s.raise_next = False
        raise KeyboardInterrupt
    s.during_cleanup += 1
    if s.during_cleanup >= 2 or time.monotonic() - s.acked > GRACE_S:
        _force_exit("a further signal during clean-up")


def _start_watchdog() -> None:
    if STATE.watchdog is None or not STATE.watchdog.is_alive():
        STATE.watchdog = threading.Thread(target=_watch, name="nas-attn-interrupt",
                                          daemon=True)
        STATE.watchdog.start()


def _watch() -> None:
    s = STATE
    last = time.monotonic()
    while s.signum is not None:  # (reset: a new command in this process; this one is done)
        s.lost.wait(0.2)
        now = time.monotonic()
        if s.acked is not None:
            if now - s.acked > CLEANUP_LIMIT_S:
                _force_exit(f"clean-up took more than {CLEANUP_LIMIT_S:.0f} s")
            continue
        if s.lost.is_set() or now - last > REDELIVER_S:
            s.lost.clear()
            last = now
            signum = s.signum
            if signum is None:
                return
            try:
                signal.pthread_kill(s.main_ident or threading.main_thread().ident, signum)
            except (OSError, ValueError):
                _force_exit("the interrupt could not be delivered")


def _force_exit(why: str) -> None:
    try:
        sys.stderr.write(f"interrupted: stopping now ({why})\n")
        sys.stderr.flush()
    finally:
        os._exit(exit_code())
