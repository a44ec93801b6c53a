"""Public morphometry API: arrays + spacing (mm, ``(dz, dy, dx)``) in, numbers with units out.

Each submodule lists its public names in ``__all__``; this package re-exports them. The
``*_chunked`` functions take a :class:`~ctmorph.morphometry.zsource.ZSource` (a slab read a few
slices at a time) instead of arrays and return what their whole-array counterparts return, in
bounded memory.
"""

from .anisotropy import Fabric, anisotropy, anisotropy_chunked, hemisphere_directions
from .basic import bone_surface, bone_surface_chunked, bone_volume, tissue_volume, voxel_volume
from .chunked import (
    ThicknessHalo,
    ThicknessStats,
    chunked_local_thickness,
    chunked_thickness_stats,
    thickness_halo,
    write_local_thickness,
)
from .connectivity import connectivity, connectivity_chunked
from .cortical import CORTICAL_COLUMNS, cortical_morphometry
from .density import density_metrics, density_metrics_chunked
from .pattern import pattern_factor, pattern_factor_chunked
from .smi import smi, smi_chunked
from .tbn import (
    medial_skeleton,
    midaxis_spacing,
    midaxis_spacing_chunked,
    trabecular_number,
)
from .thickness import CONVENTIONS, distance_transform, local_thickness
from .trabecular import (
    TRABECULAR_COLUMNS,
    TrabecularAnalysis,
    trabecular_analysis,
    trabecular_chunked,
    trabecular_morphometry,
)
from .zsource import ArraySource, Block, ZSource

__all__ = [
    "ArraySource",
    "Block",
    "ZSource",
    "anisotropy_chunked",
    "bone_surface_chunked",
    "connectivity_chunked",
    "midaxis_spacing_chunked",
    "pattern_factor_chunked",
    "smi_chunked",
    "trabecular_chunked",
    "CONVENTIONS",
    "CORTICAL_COLUMNS",
    "ThicknessHalo",
    "ThicknessStats",
    "chunked_local_thickness",
    "chunked_thickness_stats",
    "thickness_halo",
    "write_local_thickness",
    "cortical_morphometry",
    "density_metrics",
    "density_metrics_chunked",
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
