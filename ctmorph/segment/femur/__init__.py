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
plate apart is its shape: a sheet nearly free of bone spanning the whole marrow cavity
between the dense bone of the epiphysis and of the primary spongiosa, domed, W-shaped and
tilted in real femurs, so that no single slice shows it. It is therefore found as a sheet
(:mod:`.sheet`) in per-slice tile counts (:mod:`.tiles`), and the reference, the confidence
and the named flags come from that sheet (:mod:`.plate`). The distal end is the end nearer
the plate, or else the wider end with more trabecular bone (:mod:`.profiles`). The
endocortical region comes from bone-fraction-versus-depth profiles in angular sectors
(:mod:`.cortex`). :class:`~.stream.FemurStream` runs all of it chunk by chunk for scans of any
size; :func:`auto_trabecular_voi` on one volume in memory.

Modules: :mod:`.base` (checks), :mod:`.envelope`, :mod:`.cortex`, :mod:`.tiles`,
:mod:`.sheet`, :mod:`.plate`, :mod:`.profiles`, :mod:`.stream`, :mod:`.voi`.

References: Bouxsein M.L. et al. (2010) Guidelines for assessment of bone microstructure in
rodents using micro-computed tomography. J Bone Miner Res 25:1468-1486.
"""

from __future__ import annotations

from .base import DistalEnd
from .cortex import endocortical_region
from .envelope import periosteal_envelope
from .plate import GrowthPlate, find_plate
from .stream import FemurStream, FemurVoi, proximal_slices, section_index, trabecular_slices
from .voi import TrabecularVoi, auto_trabecular_voi, detect_distal_end, find_growth_plate

__all__ = [
    "DistalEnd",
    "GrowthPlate",
    "TrabecularVoi",
    "FemurStream",
    "FemurVoi",
    "periosteal_envelope",
    "detect_distal_end",
    "find_growth_plate",
    "find_plate",
    "endocortical_region",
    "auto_trabecular_voi",
    "proximal_slices",
    "section_index",
    "trabecular_slices",
]
