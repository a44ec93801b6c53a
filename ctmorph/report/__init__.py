"""Study report of an analysis folder (``ctmorph report OUT``).

:func:`make_report` is the single entry point: group tables, statistics (scipy.stats), paper
figures (matplotlib, Agg), a methods paragraph and a self-contained ``report.html``.
"""

from .build import make_report
from .data import group_order, load_results
from .summary import group_summary, model_effects, statistics_table

__all__ = [
    "group_order",
    "group_summary",
    "load_results",
    "make_report",
    "model_effects",
    "statistics_table",
]
