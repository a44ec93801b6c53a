"""Provenance of a result: the versions of the software that computed it."""

from __future__ import annotations

import platform

import numpy as np

from .. import __version__

__all__ = ["software_versions"]


def software_versions() -> dict[str, str]:
    """Versions of ctmorph, Python and the numerical libraries, for provenance."""
    import numba
    import scipy
    import skimage
    import tifffile

    return {
        "ctmorph": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "numba": numba.__version__,
        "tifffile": tifffile.__version__,
    }
