"""Write the hard realistic study (:func:`ctmorph.phantoms.make_realistic_study`) and print one
line per femur: its departures, shape, truth reference and truth VOI BV/TV, Tb.Th and Tb.Sp.

Usage::

    .venv/bin/python scripts/make_realistic_study.py OUT [--seed 2026] [--n-per-group 4]
                                                         [--size 0.5] [--jobs 2]

Then analyse it like any study::

    .venv/bin/ctmorph analyze OUT --groups OUT/groups.csv -o results/realistic

and compare ``results/realistic/morphometry.csv`` (``ref_slice``, ``voi_first_slice``,
``BV/TV`` ...) with ``OUT/truth.json``. The adult femur (group ``adult``) has no growth plate:
a correct finder refuses it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from ctmorph.phantoms import make_realistic_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--n-per-group", type=int, default=4)
    ap.add_argument("--size", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    truth = make_realistic_study(args.directory, seed=args.seed, n_per_group=args.n_per_group,
                                 size=args.size, jobs=args.jobs)
    for r in truth["scans"]:
        shape = "x".join(str(v) for v in r["shape"])
        ref = "none" if r["ref_slice"] is None else str(r["ref_slice"])
        voi = ("" if r["voi"] is None else
               f"VOI {r['voi_first_slice']}-{r['voi_last_slice']} BV/TV {r['BV/TV']:.1f} % "
               f"Tb.Th {r['Tb.Th']:.3f} Tb.Sp {r['Tb.Sp']:.3f} mm")
        print(f"{r['scan']:12s} {shape:14s} ref {ref:5s} {voi}")
        print(f"{'':12s} {'; '.join(r['departures'])}")
    print(f"{len(truth['scans'])} femurs in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
