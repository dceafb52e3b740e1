"""Typed errors. Every message names the file, field or value at fault and what is accepted."""


class NasAttnError(Exception):
    """Base class for every error this package raises on purpose."""


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


class StudyError(NasAttnError, LookupError):
    """A study that does not exist, or a trial that is missing."""
