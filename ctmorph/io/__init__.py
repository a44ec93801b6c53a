"""Input/output: Bruker SkyScan/NRecon reconstruction folders (read and write)."""

from .skyscan import Scan, SkyscanLog, find_scan_dirs, parse_log, read_scan
from .writer import write_nrecon_folder

__all__ = [
    "Scan",
    "SkyscanLog",
    "find_scan_dirs",
    "parse_log",
    "read_scan",
    "write_nrecon_folder",
]
