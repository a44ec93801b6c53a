"""One scan: load → segment → VOI → measure → a result row with provenance.

:func:`analyze_scan` is the public entry point (docs/DESIGN.md §6) and returns one row of
``morphometry.csv``; :func:`measure_scan` returns the row together with the details the batch
writes next to it (per-scan JSON, QC pictures).
"""

from ..qc import QcData
from .measure import (
    ThicknessHistogram,
    structure_metrics,
    structure_metrics_chunked,
    thickness_histogram,
)
from .provenance import software_versions
from .scan import (
    ALIGN_MIN_DEG,
    STAGES,
    Progress,
    ScanResult,
    analyze_scan,
    measure_scan,
    voi_slab,
)
from .stream import scan_histogram

__all__ = [
    "analyze_scan",
    "measure_scan",
    "voi_slab",
    "ScanResult",
    "QcData",
    "STAGES",
    "ALIGN_MIN_DEG",
    "Progress",
    "software_versions",
    "scan_histogram",
    "structure_metrics",
    "structure_metrics_chunked",
    "ThicknessHistogram",
    "thickness_histogram",
]
