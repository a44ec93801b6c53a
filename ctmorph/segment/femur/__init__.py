"""Rat distal femur: bone envelope, distal end, growth plate and the trabecular VOI.

Everything here works on an already segmented boolean bone volume ``(Z, Y, X)`` with
``spacing=(dz, dy, dx)`` in mm, z along the bone. All lengths are in mm so the rules hold at any
voxel size.

The VOI follows the usual metaphyseal convention for the rat distal femur (Bouxsein et al.
2010): the reference is the proximal boundary of the growth plate, i.e. the first slice, moving
proximally, that holds no growth-plate cartilage; the VOI starts ``offset_mm`` proximal of it,
is ``height_mm`` long, and covers the endocortical (marrow-side) region only.

Notes
-----
Cartilage has soft-tissue attenuation in µCT, so it looks like marrow. What sets the growth
plate apart is its shape: a continuous sheet spanning the whole interior of the bone, whereas
the marrow next to it (epiphysis distally, dense primary spongiosa proximally) comes in small
pores between trabeculae. Per slice, the "cartilage area" is therefore the interior non-bone
area farther than ``far_mm`` from any bone in the slice plane (2-D Euclidean distance). The
plate is the sharpest such band near the distal end, bounded by bone on both sides (epiphysis,
primary spongiosa); where the area falls to about zero proximal of it, the last remnants of a
wavy or tilted plate (crests and crescents too narrow to hold pixels ``far_mm`` from bone) are
followed slice by slice while they keep tapering, and the reference is the first slice after
them.

The distal end is the end nearer to the growth plate (or, without a plate seen from both
ends, the wider end with more trabecular bone: condyles versus diaphysis). The endocortical
region comes from bone-fraction-versus-depth profiles in angular sectors (see
:func:`endocortical_region`).

References: Bouxsein M.L. et al. (2010) Guidelines for assessment of bone microstructure in
rodents using micro-computed tomography. J Bone Miner Res 25:1468-1486.
"""

from __future__ import annotations

from .base import DistalEnd
from .cortex import endocortical_region
from .envelope import periosteal_envelope
from .plate import GrowthPlate, detect_distal_end, find_growth_plate
from .voi import TrabecularVoi, auto_trabecular_voi, proximal_slices, trabecular_slices

__all__ = [
    "DistalEnd",
    "GrowthPlate",
    "TrabecularVoi",
    "periosteal_envelope",
    "detect_distal_end",
    "find_growth_plate",
    "endocortical_region",
    "auto_trabecular_voi",
    "proximal_slices",
    "trabecular_slices",
]
