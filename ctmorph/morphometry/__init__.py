"""Public morphometry API: the measures. Arrays + spacing (mm, ``(dz, dy, dx)``) in, numbers
with units out.

Each measure ``x(bone, voi, ...)`` has one implementation, ``x_chunked(src, ...)``, which reads
a :class:`~ctmorph.morphometry.zsource.ZSource` (a segmented slab) a block of slices at a time;
``x`` is that function applied to the arrays read as one block. The plumbing (sources, blocks,
halos) lives in :mod:`ctmorph.morphometry.zsource` and :mod:`ctmorph.morphometry.chunked`.
Each submodule lists its public names in ``__all__``; this package re-exports the measures.
"""

from .anisotropy import Fabric, anisotropy, anisotropy_chunked, hemisphere_directions
from .basic import bone_surface, bone_surface_chunked, bone_volume, tissue_volume, voxel_volume
from .chunked import (
    ThicknessStats,
    local_thickness_chunked,
    thickness_stats_chunked,
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
    trabecular_morphometry,
    trabecular_morphometry_chunked,
)

__all__ = [
    # volumes and surface
    "voxel_volume",
    "tissue_volume",
    "bone_volume",
    "bone_surface",
    "bone_surface_chunked",
    # thickness, spacing, number
    "CONVENTIONS",
    "distance_transform",
    "local_thickness",
    "local_thickness_chunked",
    "write_local_thickness",
    "ThicknessStats",
    "thickness_stats_chunked",
    "medial_skeleton",
    "midaxis_spacing",
    "midaxis_spacing_chunked",
    "trabecular_number",
    # the trabecular panel
    "TRABECULAR_COLUMNS",
    "trabecular_morphometry",
    "trabecular_morphometry_chunked",
    # structure
    "connectivity",
    "connectivity_chunked",
    "smi",
    "smi_chunked",
    "Fabric",
    "anisotropy",
    "anisotropy_chunked",
    "hemisphere_directions",
    "pattern_factor",
    "pattern_factor_chunked",
    # cortex and density
    "CORTICAL_COLUMNS",
    "cortical_morphometry",
    "density_metrics",
    "density_metrics_chunked",
]
