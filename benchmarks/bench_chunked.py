"""Whole-volume vs chunked local thickness: time and peak memory (not a test).

``python benchmarks/bench_chunked.py [--shape 512 256 256] [--chunk 64]``

Makes one ``random_trabecular`` volume (marrow phase by default: its balls are the largest, so
its halo is the widest), stores it as ``mask.npy`` in a temporary folder, then runs each
method in a fresh Python process and reports wall time, CPU time and the process's peak
resident memory (``ru_maxrss``, which includes the interpreter, numba and the mapped input
pages):

- ``whole``: ``np.load`` the mask into memory, ``local_thickness`` + mean/SD/max over it;
- ``chunked-stats``: ``thickness_stats_chunked`` on the memmapped mask (no map kept);
- ``chunked-write``: ``write_local_thickness`` of the memmapped mask to a ``.npy`` file;
- ``whole-write``: ``local_thickness`` of the in-memory mask saved with ``np.save``.

Each child first warms up the numba kernels on a tiny volume (not timed). The parent checks
that the chunked map equals the whole map voxel for voxel and that the statistics agree. The
machine may be shared: times are indicative; peak memory is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("whole", "chunked-stats", "whole-write", "chunked-write")


def _warm_up() -> None:
    from ctmorph.morphometry import local_thickness, thickness_stats_chunked

    m = np.zeros((8, 8, 8), bool)
    m[2:6] = True
    local_thickness(m, spacing=1.0)
    thickness_stats_chunked(m, spacing=1.0, chunk_slices=2)


def _child(method: str, work: Path, chunk: int) -> dict:
    from ctmorph._kernels.thickness import masked_stats
    from ctmorph.morphometry import (
        local_thickness,
        thickness_stats_chunked,
        write_local_thickness,
    )

    _warm_up()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w0, c0 = time.perf_counter(), time.process_time()
    res: dict = {}
    if method in ("whole", "whole-write"):
        mask = np.load(work / "mask.npy")
        tau = local_thickness(mask, spacing=1.0)
        if method == "whole":
            n, mean, sd, vmax = masked_stats(tau, mask)
            res["stats"] = [mean, sd, vmax, n]
        else:
            np.save(work / "whole.npy", tau)
    else:
        mask = np.load(work / "mask.npy", mmap_mode="r")
        if method == "chunked-stats":
            res["stats"] = list(thickness_stats_chunked(mask, spacing=1.0, chunk_slices=chunk))
        else:
            info = write_local_thickness(mask, work / "chunked.npy", spacing=1.0,
                                         chunk_slices=chunk)
            res["halo"] = info.halo
            res["radius"] = info.radius
    res["wall_s"] = time.perf_counter() - w0
    res["cpu_s"] = time.process_time() - c0
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["rss_after_warmup_mb"] = base / 1024
    return res


def _make(work: Path, shape: tuple[int, int, int], phase: str) -> None:
    from ctmorph.phantoms import random_trabecular

    bone = random_trabecular(shape, bv_tv=0.25, scale=3.0, seed=1)
    np.save(work / "mask.npy", bone if phase == "bone" else ~bone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 256, 256])
    parser.add_argument("--chunk", type=int, default=64, help="slices per chunk")
    parser.add_argument("--phase", choices=("bone", "marrow"), default="marrow")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, Path(args.work), args.chunk)))
        return

    with tempfile.TemporaryDirectory(prefix="bench_chunked_") as tmp:
        work = Path(tmp)
        shape = tuple(args.shape)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c",
                        "import sys; sys.path.insert(0, sys.argv[1]);"
                        "import bench_chunked as b; from pathlib import Path;"
                        f"b._make(Path(sys.argv[2]), {shape!r}, {args.phase!r})",
                        str(Path(__file__).parent), str(work)], check=True)
        nvox = int(np.prod(shape))
        print(f"volume {shape} {args.phase} ({nvox / 2**20:.0f} Mi voxels, mask "
              f"{nvox / 2**20:.0f} MiB, map {4 * nvox / 2**20:.0f} MiB), made in "
              f"{time.perf_counter() - t0:.1f} s; chunks of {args.chunk} slices")
        results = {}
        for m in args.methods:
            out = subprocess.run(
                [sys.executable, __file__, "--child", m, "--work", str(work),
                 "--chunk", str(args.chunk)],
                check=True, capture_output=True, text=True,
            )
            results[m] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'method':>14} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13} "
              f"{'RSS after warm-up':>18}")
        for m, r in results.items():
            print(f"{m:>14} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_rss_mb']:13.0f} "
                  f"{r['rss_after_warmup_mb']:18.0f}")
        if "chunked-write" in results:
            r = results["chunked-write"]
            print(f"largest ball radius {r['radius']:.3g} voxels, halo {r['halo']} slices")
        if "whole" in results and "chunked-stats" in results:
            a, b = results["whole"]["stats"], results["chunked-stats"]["stats"]
            print(f"stats whole   (mean, sd, max, n): {a}")
            print(f"stats chunked (mean, sd, max, n): {b}")
        if "whole-write" in results and "chunked-write" in results:
            same = np.array_equal(np.load(work / "whole.npy", mmap_mode="r"),
                                  np.load(work / "chunked.npy", mmap_mode="r"))
            print(f"chunked map == whole map voxel for voxel: {same}")


if __name__ == "__main__":
    main()
