"""Many scans: one study threshold, per-scan results, failures isolated, outputs atomic.

One failed scan never loses the others and never changes their numbers: its row carries
``status=failed`` and the reason, a scan that cannot be measured never enters the pooled
threshold, and the run goes on. Scans come from folders (with a groups file or one group) or
from a manifest (:mod:`ctmorph.manifest`); :func:`check_study` validates a study from the file
headers without analysing it (``ctmorph analyze --dry-run``).

The study threshold is one physical threshold (docs/DESIGN.md §2): pooled and applied in attenuation
through each scan's own CS window (:mod:`ctmorph.segment.pooling`), so scans reconstructed with
different windows or bit depths are segmented at the same attenuation.

With ``jobs > 1`` the scans run in a pool of processes (:class:`ctmorph.workers.WorkerPool`) in
two phases: every scan's header and (for a pooled Otsu threshold) grey histogram, then the
measurements, largest scans first. A worker that dies (out of memory, a crash) fails only the
scan it was measuring; a fresh worker takes its place. Each worker gives numba the usable cores
divided by the workers busy measuring, re-evaluated at every pipeline stage. Thread counts
never change the numbers.
"""

from ..manifest import read_groups
from ..outputs import write_table
from .check import ScanCheck, check_study
from .jobs import default_jobs
from .run import ProgressFactory, RunSummary, run_analysis

__all__ = [
    "run_analysis",
    "RunSummary",
    "ProgressFactory",
    "check_study",
    "ScanCheck",
    "default_jobs",
    "read_groups",
    "write_table",
]
