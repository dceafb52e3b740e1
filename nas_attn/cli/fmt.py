"""What the CLI's output shares: the one function every user-supplied name goes through
(`escape`), number formats, the width rule of its tables, the progress lines of long runs."""
from __future__ import annotations

import unicodedata

from rich.markup import escape as _escape_markup


def escape(text) -> str:
    """Text from users, files and folders fit for a terminal: rich markup escaped, and control
    characters shown as \\xNN (a name holding ESC sequences could rewrite the screen or hide
    what follows). Every name the CLI prints goes through it."""
    safe = "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" and c != "\n" else c
                   for c in str(text))
    return _escape_markup(safe)


def fmt_score(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def big_count(v):
    if v is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


WIDE_LEADERBOARD = 140
"""Below this console width the architecture leaves the table for a line of its own per trial
(at 80 columns the column got 6 characters, and each summary wrapped over 30 lines; at 140
it gets about 60)."""


class StepLog:
    """One line per `every` seconds of a long training (`nas_attn.training.StepInfo`): what is
    trained, epoch, step, loss, throughput, elapsed and an estimate of the time left, so that a
    run whose output goes to a log file says how far it is."""

    def __init__(self, console, every: float = 30.0):
        import time

        self.console, self.every, self.clock = console, every, time.monotonic
        self.last = self.clock()

    def __call__(self, what: str, info) -> None:
        now = self.clock()
        if now - self.last < self.every and info.global_step < info.total_steps:
            return
        self.last = now
        left = info.elapsed_s / max(1, info.global_step) * (info.total_steps - info.global_step)
        self.console.print(f"    {what}: epoch {info.epoch}/{info.epochs}, step "
                           f"{info.global_step}/{info.total_steps}, loss {info.loss:.4f}, "
                           f"{info.images_per_s:.1f} img/s, {info.elapsed_s:.0f} s elapsed, "
                           f"about {left:.0f} s left", highlight=False)
