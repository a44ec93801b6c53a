"""Public morphometry API: arrays + spacing (mm, ``(dz, dy, dx)``) in, numbers with units out.

Each submodule lists its public names in ``__all__``; this package re-exports them.
"""

from .anisotropy import Fabric, anisotropy, hemisphere_directions
from .basic import bone_surface, bone_volume, tissue_volume, voxel_volume
from .chunked import (
    ThicknessHalo,
    ThicknessStats,
    chunked_local_thickness,
    chunked_thickness_stats,
    thickness_halo,
    write_local_thickness,
)
from .connectivity import connectivity
from .cortical import CORTICAL_COLUMNS, cortical_morphometry
from .pattern import pattern_factor
from .smi import smi
from .tbn import medial_skeleton, midaxis_spacing, trabecular_number
from .thickness import CONVENTIONS, distance_transform, local_thickness
from .trabecular import (
    TRABECULAR_COLUMNS,
    TrabecularAnalysis,
    trabecular_analysis,
    trabecular_morphometry,
)

__all__ = [
    "CONVENTIONS",
    "CORTICAL_COLUMNS",
    "ThicknessHalo",
    "ThicknessStats",
    "chunked_local_thickness",
    "chunked_thickness_stats",
    "thickness_halo",
    "write_local_thickness",
    "cortical_morphometry",
    "Fabric",
    "anisotropy",
    "connectivity",
    "hemisphere_directions",
    "pattern_factor",
    "smi",
    "TRABECULAR_COLUMNS",
    "TrabecularAnalysis",
    "bone_surface",
    "bone_volume",
    "distance_transform",
    "local_thickness",
    "medial_skeleton",
    "midaxis_spacing",
    "tissue_volume",
    "trabecular_analysis",
    "trabecular_morphometry",
    "trabecular_number",
    "voxel_volume",
]
