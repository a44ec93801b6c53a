"""Input/output: Bruker SkyScan/NRecon reconstruction folders (read and write)."""

from .writer import write_nrecon_folder

__all__ = ["write_nrecon_folder"]
