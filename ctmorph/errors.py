"""Exception family of ctmorph.

Every message names the file (or scan) and the problem in one line, so the CLI can print it
as is. Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations

__all__ = [
    "CtmorphError",
    "ScanError",
    "SegmentationError",
    "ConfigError",
    "CalibrationError",
    "OutputError",
]


class CtmorphError(Exception):
    """Base class of all errors ctmorph raises on purpose."""


class ScanError(CtmorphError):
    """A scan folder, log or slice file cannot be used (missing, unreadable, inconsistent)."""


class SegmentationError(CtmorphError):
    """Segmentation or VOI placement failed (no growth plate, empty VOI, all-bone volume)."""


class ConfigError(CtmorphError, ValueError):
    """An analysis parameter or argument is invalid."""


class CalibrationError(CtmorphError):
    """A density calibration cannot be made or applied."""


class OutputError(CtmorphError):
    """An output file or folder cannot be written (disk full, read-only, a file in the way)."""
