"""Group tables and statistics from an analysis folder (``ctmorph report OUT``)."""

from .summary import group_order, group_summary, load_results, make_report, statistics_table

__all__ = ["group_order", "group_summary", "load_results", "make_report", "statistics_table"]
