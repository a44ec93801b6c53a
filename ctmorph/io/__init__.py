"""Input/output: Bruker SkyScan/NRecon reconstruction folders (read and write)."""

from .skyscan import (
    Scan,
    SkyscanLog,
    find_scan_dirs,
    normalize_name,
    parse_log,
    read_scan,
    scan_name,
)
from .writer import write_nrecon_folder

__all__ = [
    "Scan",
    "SkyscanLog",
    "find_scan_dirs",
    "normalize_name",
    "scan_name",
    "parse_log",
    "read_scan",
    "write_nrecon_folder",
]
