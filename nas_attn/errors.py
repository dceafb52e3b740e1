"""Typed errors. Every message names the file, field or value at fault and what is accepted."""
import errno as _errno


class NasAttnError(Exception):
    """Base class for every error this package raises on purpose."""

    exit_code = 2
    """The command line's exit status when this error stops a command."""


class ArchError(NasAttnError, ValueError):
    """An architecture description (UNetArch / AttnSpec) is invalid."""


class UnknownAttentionError(ArchError):
    """An attention name that is not registered."""


class AttentionOptionError(ArchError):
    """An option that the chosen attention module does not accept, or a bad value."""


class DataError(NasAttnError, ValueError):
    """A dataset folder or file is missing, unreadable or inconsistent."""


class SpaceError(NasAttnError, ValueError):
    """A search-space YAML file is malformed."""


class TrainingError(NasAttnError, RuntimeError):
    """Training cannot go on."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""


class OutOfMemoryError(TrainingError):
    """The accelerator (or host) ran out of memory for this candidate."""


class DiskFullError(NasAttnError, OSError):
    """A write failed for lack of space (ENOSPC, or a disk quota): `path` names what could not
    be written. Not bad input: the same command succeeds once space is freed (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
        self.errno = _errno.ENOSPC
        self.filename = path

    def __str__(self) -> str:
        return str(self.args[0])


class StudyError(NasAttnError, LookupError):
    """A study that does not exist, or a trial that is missing."""


class NasAttnWarning(UserWarning):
    """Something the user should know that does not stop the command (the command line prints
    it as one `note:` line)."""
