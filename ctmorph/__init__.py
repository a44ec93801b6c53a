"""ctmorph: automatic trabecular bone micro-CT morphometry for Skyscan/NRecon studies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctmorph")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
