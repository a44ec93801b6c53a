"""Whether compiled kernels may run in two Python threads at once."""

from __future__ import annotations

import numba

__all__ = ["concurrent_kernels_ok"]


def concurrent_kernels_ok() -> bool:
    """True when numba's threading layer may launch parallel kernels from two threads at
    once (``omp`` and ``tbb`` may; ``workqueue`` may not), and a layer has been chosen (a
    parallel kernel has run in this process)."""
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False
