"""ctmorph: automatic trabecular bone micro-CT morphometry for Skyscan/NRecon studies.

Public entry points (docs/DESIGN.md §6): :func:`ctmorph.analyze_scan` (one scan → one row of
``morphometry.csv``), :func:`ctmorph.io.read_scan` and
:func:`ctmorph.morphometry.local_thickness`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctmorph")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "analyze_scan", "AnalysisConfig"]


def __getattr__(name: str):
    # Lazy, so that ``import ctmorph`` does not load numba kernels and plotting libraries.
    if name == "analyze_scan":
        from .pipeline import analyze_scan

        return analyze_scan
    if name == "AnalysisConfig":
        from .config import AnalysisConfig

        return AnalysisConfig
    raise AttributeError(f"module 'ctmorph' has no attribute {name!r}")
