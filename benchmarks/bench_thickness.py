"""Speed check of local thickness (not a test): ``python benchmarks/bench_thickness.py``.

Times :func:`ctmorph.morphometry.local_thickness` on ``random_trabecular`` sponges of 128³ and
256³ (bone = Tb.Th, marrow = Tb.Sp), one EDT pass (ctmorph and scipy) for scale, and the whole
:func:`ctmorph.morphometry.trabecular_morphometry` (adds BS, the skeleton and Tb.N) on a VOI
with an 8-voxel context margin. The first call compiles (or loads cached) numba kernels and is
timed separately as "warm-up". Wall-clock times, best of ``--repeat``; on a shared machine the
CPU column (process time, all threads) is the steadier figure.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from scipy import ndimage

from ctmorph.morphometry import distance_transform, local_thickness, trabecular_morphometry
from ctmorph.phantoms import random_trabecular


def _best(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and the CPU time of that run (seconds)."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        run = (time.perf_counter() - w0, time.process_time() - c0)
        best = min(best, run)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    t0 = time.perf_counter()
    small = random_trabecular(24, seed=0)
    trabecular_morphometry(small, np.ones_like(small), spacing=1.0)
    print(f"warm-up (compile or load cache): {time.perf_counter() - t0:.2f} s")
    print(f"numba threads: {numba.get_num_threads()}")
    print(f"{'size':>6} {'what':>28} {'wall s':>8} {'cpu s':>8}")
    for n in args.sizes:
        bone = random_trabecular(n, bv_tv=0.25, scale=3.0, seed=1)
        for name, phase in (("bone", bone), ("marrow", ~bone)):
            wall, cpu = _best(lambda p=phase: local_thickness(p, spacing=1.0), args.repeat)
            print(f"{n:>5}³ {'local_thickness ' + name:>28} {wall:8.2f} {cpu:8.2f}")
        wall, cpu = _best(lambda b=bone: distance_transform(~b, spacing=1.0), args.repeat)
        print(f"{n:>5}³ {'ctmorph EDT (marrow)':>28} {wall:8.2f} {cpu:8.2f}")
        wall, cpu = _best(lambda b=bone: ndimage.distance_transform_edt(~b), 1)
        print(f"{n:>5}³ {'scipy EDT (marrow)':>28} {wall:8.2f} {cpu:8.2f}")
        voi = np.zeros_like(bone)
        voi[8:-8, 8:-8, 8:-8] = True
        wall, cpu = _best(lambda b=bone, v=voi: trabecular_morphometry(b, v, spacing=1.0), 1)
        print(f"{n:>5}³ {'trabecular_morphometry':>28} {wall:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
