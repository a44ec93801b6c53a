"""Realistic synthetic rat distal femur scans, with truth per voxel.

:func:`make_realistic_femur` builds one adult female rat distal femur (Sprague-Dawley, 3-6
months) in a fluid-filled sample tube, scanned the way a Bruker SkyScan / NRecon reconstruction
shows it, and returns it with its truth (:class:`RealisticFemur`). :func:`make_realistic_study`
writes a hard study of such femurs (sham, OVX, OVX+Exos and one adult femur without a growth
plate) as NRecon folders with ``groups.csv`` and ``truth.json``.

The femur is a continuous object: every tissue is an implicit function of a point's
coordinates in the *anatomical frame* (mm), and random structure lives on grids in that frame
(:class:`~ctmorph.phantoms.fields.GridField`). The scan evaluates those functions at each
voxel centre, so the femur is the same at every voxel size, tilt and position (no volume is
ever rotated or resampled), and the same seed gives the same femur.

Frames (vectors in ``(z, y, x)`` order, mm)
    Scan frame: voxel ``(i, j, k)`` is centred at ``p = (i dz, j dy, k dx)`` (ctmorph's
    convention). Anatomical frame ``a = (z, y, x)``: ``z`` along the bone axis (the centre
    line of the elliptical shaft) towards proximal, 0 at the level of the distal-most point of
    the condyles; ``y`` anterior; ``x`` lateral. ``p = C + M a`` with ``M = R_tilt R_spin F``:
    ``F = diag(s, 1, s)`` (``s = -1``: the bone turned end over end, distal end last),
    ``R_spin`` a turn by ``spin_deg`` about the scan z axis, ``R_tilt`` the smallest rotation
    taking z to ``(cos t, sin t sin a, sin t cos a)`` (``t = tilt_deg``, ``a =
    tilt_azimuth_deg``).

Anatomy (at ``size`` = 1, the real rat; ``size`` scales cross-sections and the epiphysis)
    Elliptical shaft 3.25 mm mediolateral (ML) x 2.8 mm anteroposterior (AP); metaphyseal
    flare to 4.7 x 3.7 mm over ``flare_mm`` (2.5) proximal of the growth plate; an epiphysis of
    two condyles (ellipsoids, ML about 5.2 mm overall) posteriorly, separated by the
    intercondylar notch, and the trochlea anteriorly with the patellar groove (0.3 mm deep),
    joined by smooth unions. The cortex is the outer ``t_c(z)`` mm of the bone: a shell of
    ``shell_mm`` (0.1) over the epiphysis and metaphysis, thickening from 0.5 mm proximal of
    the plate over 4.5 mm to ``diaphysis_cortex_mm`` (0.6), so about 0.12, 0.23 and 0.4 mm at 1,
    2 and 3 mm. Lengths along the shaft (flare, thickening) do not scale with ``size``: the
    standard VOI 1-3 mm proximal of the plate stays metaphyseal in a small femur.
    Articular cartilage (0.06 mm) covers the distal joint
    surfaces. The outer surface function is close to a signed distance, so wall thicknesses are
    thicknesses along the surface normal.

Growth plate
    A cartilage sheet of normal thickness ``plate_thickness_mm`` (mean over the plate; a smooth
    variation of up to ±8 %) about
    the mid-surface ``w = h(u, v)`` in a plane through the axis at ``plate_level_mm`` tilted by
    ``plate_tilt_deg`` from the shaft; ``h`` is a dome (centre proximal) or a W across the
    condyles (``plate_amplitude_mm`` peak to trough) plus a smooth ripple. Bony bridges cross
    it where a 2-D random field exceeds its ``1 - bridged_fraction`` quantile over the plate's
    area (patches about ``bridge_size_mm`` across). A thin perforated epiphyseal bone plate
    lies on its distal face; the primary spongiosa (dense longitudinal rods, BV/TV
    ``primary_bv_tv`` at the cartilage fading to 0 over ``primary_mm``) on its proximal face.
    At the bone's surface the plate meets the perichondrial ring: over ``ring_open_fraction``
    of the circumference the cortex is open there (soft tissue with the cartilage's grey, so
    slices through it have no closed cortical ring, as in real femurs), elsewhere a thin bony
    bark covers it. ``plate_present=False`` (an adult): no cartilage at all, a perforated
    bony scar instead.

Trabecular bone
    Metaphysis (secondary spongiosa): sheets around the zero surface of a smooth anisotropic
    random field (elongated along the axis), perforated by a second field (a group-dependent
    fraction of holes), so OVX bone is sparse, thin and disconnected. Its design BV/TV falls
    with the distance ``d`` from the plate (rising behind the primary spongiosa, then falling,
    zero beyond 5 mm: the diaphysis) and is calibrated so the design VOI (1-3 mm proximal of
    the design reference) holds the group's target. These distances are absolute (not scaled
    by ``size``): the standard VOI lies in the trabecular region at any size. Epiphysis: its
    own sheet field at ``epiphysis_bv_tv``.

Specimen and scan (:class:`Specimen`, :class:`ScanSettings`)
    The bone lies in fluid in a plastic tube (axis along the scanner's rotation axis), with air
    bubbles (some on the bone), muscle remnants on the bone surface and a foam spacer (air-filled
    thin-walled cells) against one end of the scan. The scan adds beam-hardening cupping,
    correlated noise, Gaussian partial-volume blur, ring artefacts about the rotation centre,
    bright specks, round-ROI zeros, 8- or 16-bit output and a CS window.

Grey levels
    Each label has a grey level in 8-bit units under :data:`REFERENCE_CS_WINDOW` (the window
    of the sample study, marrow 64 = 0 and trabecular bone 200 = 1.15 g/cm³ HA): air 10, foam
    55, tube 52, fluid 58, soft tissue 62, marrow 64, cartilage 68, bone 200-215
    (:data:`GREY_LEVELS`). Artefact amplitudes (noise, cupping, rings) are in the same units.
    A scan with another window or 16 bits converts these attenuations through its own window:
    the same tissue has another grey value, as in NRecon.

Truth (see :class:`ReferenceTruth`, :class:`TruthVoi`)
    Axial coordinate of a voxel: ``t = (p - A) . u`` (mm), with ``u`` the bone axis (unit,
    distal to proximal, scan frame) and ``A`` the point where the axis crosses the plane of
    slice 0 (``z = 0``). Sections are planes perpendicular to the axis, one voxel apart; voxel
    ``p`` belongs to section ``round(t / dz)``. For an untilted femur stored distal first,
    section ``k`` is slice ``k`` (stored distal last: section ``-k``). The growth-plate
    reference is the first section, moving proximally, that holds no growth-plate cartilage
    voxel: one more than the largest section holding cartilage. The truth VOI is the
    endocortical region (marrow, trabecular bone, and any other tissue on the marrow side of
    the cortex) in the sections from ``round(voi_offset_mm / dz)`` to ``round(voi_offset_mm /
    dz) + round(voi_height_mm / dz) - 1`` proximal of the reference, as ctmorph places its VOI.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special

from .._atomic import atomic_write_text
from ..errors import ConfigError
from .fields import (
    GridField,
    gaussian_noise_field,
    replace_folder_atomic,
    ring_profile,
    rotation_taking_z_to,
    sheet_field,
    smoothstep,
)
from .rods import cs_window_for_levels

__all__ = [
    "LABELS",
    "BONE_LABELS",
    "ENDOCORTICAL_LABELS",
    "GREY_LEVELS",
    "REFERENCE_CS_WINDOW",
    "GROUP_DESIGNS",
    "TrabecularDesign",
    "Anatomy",
    "Specimen",
    "ScanSettings",
    "FemurModel",
    "ReferenceTruth",
    "TruthVoi",
    "RealisticFemur",
    "make_realistic_femur",
    "realistic_study_design",
    "make_realistic_study",
]

logger = logging.getLogger(__name__)

#: Labels of :attr:`RealisticFemur.labels`. Bone is every label from ``trabecular`` on
#: (:data:`BONE_LABELS`); the endocortical region is ``marrow`` .. ``bridge``.
LABELS: dict[str, int] = {
    "air": 0,  # outside the tube, and foam pores
    "bubble": 1,  # air bubbles in the fluid
    "foam": 2,  # walls of the foam spacer
    "tube": 3,  # plastic sample tube
    "fluid": 4,  # fixative / saline in the tube
    "soft_tissue": 5,  # muscle and tendon remnants on the bone
    "articular_cartilage": 6,  # on the condyles and the trochlea (outside the bone)
    "marrow": 7,
    "cartilage": 8,  # growth-plate cartilage
    "trabecular": 9,  # secondary spongiosa of the metaphysis
    "primary_spongiosa": 10,
    "epiphyseal": 11,  # epiphyseal trabeculae and the epiphyseal bone plate
    "bridge": 12,  # bony bridges through the growth plate (and an adult's growth-plate scar)
    "cortical": 13,
    "perichondrial_ring": 14,  # where the growth plate reaches the periosteal surface
}
_AIR, _BUBBLE, _FOAM, _TUBE, _FLUID, _SOFT, _ARTIC, _MARROW, _CART, _TRAB, _PRIM, _EPI, \
    _BRIDGE, _CORT, _RING = range(15)
_OUTSIDE = 255  # internal: not bone, bone tissue or attached tissue (the specimen fills it)

#: Labels that are bone.
BONE_LABELS: tuple[int, ...] = (_TRAB, _PRIM, _EPI, _BRIDGE, _CORT)
#: Labels of the endocortical region (the marrow side of the cortex).
ENDOCORTICAL_LABELS: tuple[int, ...] = (_MARROW, _CART, _TRAB, _PRIM, _EPI, _BRIDGE)

#: Grey level of each label (index = label) in 8-bit grey under :data:`REFERENCE_CS_WINDOW`,
#: before artefacts. Specimen and anatomy parameters override fluid, tube, foam, soft tissue
#: and cartilage.
GREY_LEVELS: tuple[float, ...] = (10.0, 10.0, 55.0, 52.0, 58.0, 62.0, 68.0, 64.0, 68.0, 200.0,
                                  205.0, 205.0, 205.0, 215.0, 68.0)

#: CS window (NRecon attenuation units) of the reference grey scale: the sample study's, under
#: which marrow (64) is 0 and trabecular bone (200) 1.15 g/cm³ HA in
#: :data:`ctmorph.phantoms.rods.DEFAULT_HA_MODEL`.
REFERENCE_CS_WINDOW: tuple[float, float] = cs_window_for_levels((64.0, 200.0), (0.0, 1.15))


@dataclass(frozen=True)
class TrabecularDesign:
    """Trabecular design of a group.

    Attributes
    ----------
    bv_tv : float
        BV/TV (fraction) of the secondary spongiosa in the design VOI (1-3 mm proximal of the
        design reference).
    cell_mm : float
        Filter sigma (mm) of the sheet field across the axis: sheets about 4 ``cell_mm`` apart.
    perforated : float
        Fraction of space where the perforation field removes sheets.
    epiphysis_bv_tv : float
        BV/TV (fraction) of the epiphyseal trabecular bone.
    taper : float
        Width (standard deviations of the perforation field) over which sheets thin out to
        nothing at a perforation's edge: larger gives thinner, tapering trabeculae.
    """

    bv_tv: float
    cell_mm: float
    perforated: float
    epiphysis_bv_tv: float
    taper: float = 0.3


#: Group designs: sham BV/TV ~27 %, OVX+Exos ~17 %, OVX ~7.5 % with fewer, perforated and
#: disconnected trabeculae (larger cells, more perforation). On the truth, with
#: :func:`ctmorph.morphometry.trabecular_morphometry` (size 0.5, 15 µm, one seed): Tb.Th
#: about 0.071, 0.076 and 0.063 mm, Tb.Sp 0.21, 0.30 and 0.48 mm, Tb.N 3.5, 2.5 and 1.7 /mm.
GROUP_DESIGNS: dict[str, TrabecularDesign] = {
    "sham": TrabecularDesign(0.275, cell_mm=0.085, perforated=0.08, epiphysis_bv_tv=0.42),
    "OVX+Exos": TrabecularDesign(0.175, cell_mm=0.12, perforated=0.25, epiphysis_bv_tv=0.40),
    "OVX": TrabecularDesign(0.075, cell_mm=0.22, perforated=0.50, epiphysis_bv_tv=0.36,
                            taper=0.25),
}

# Geometry at size 1 (mm): semi-axes (AP, ML) of the shaft and of the metaphysis at the plate;
# primitives as (centre z, y, |x|) and radii (z, y, x).
_SHAFT_BA = (1.40, 1.625)
_META_BA = (1.85, 2.35)
_CONDYLE_C, _CONDYLE_R = (1.05, -0.55, 1.40), (1.05, 1.40, 1.20)
_TROCHLEA_C, _TROCHLEA_R = (1.40, 0.75, 0.0), (1.05, 1.20, 1.90)
_NOTCH_C, _NOTCH_R = (0.20, -1.35, 0.0), (1.40, 1.00, 0.42)
_GROOVE_Y, _GROOVE_R = 2.25, 0.60
_BLEND, _CUT_BLEND, _CAP_BLEND = 0.25, 0.08, 0.20
_CAP_BELOW_PLATE = 0.60  # the shaft column ends this far distal of the plate level
_CORTEX_START, _CORTEX_LENGTH = 0.5, 4.5  # thickening: from plate + 0.5 mm over 4.5 mm
# Absolute (not scaled) microstructure constants, mm.
_EPI_PLATE_MM = 0.03  # epiphyseal bone plate on the distal face of the cartilage
_EPI_PLATE_HOLES = 0.30  # fraction of it perforated
_SCAR_MM = 0.04  # adult growth-plate scar
_EPI_CELL_MM = 0.06  # epiphyseal trabecular field sigma
_PRIMARY_SIGMA = (0.06, 0.025)  # primary spongiosa field sigma (along the plate normal, across)
_RASTER_MM = 0.005  # plate rasters (mid-surface, thickness, bridges)
_RIPPLE_SIGMA_MM = 0.15
_THICKNESS_VARIATION = 0.08
_SECONDARY_END_MM = 5.0  # no secondary spongiosa beyond this distance from the plate
_VOI_DESIGN = (1.0, 2.0)  # design VOI (offset, height) of the BV/TV calibration
_PROB = np.linspace(0.0, 0.95, 1901)


def _finite(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" within {lo:g}..{hi:g}" if lo is not None and hi is not None else ""
        raise ConfigError(f"{name} must be a finite number{rng}, got {value!r}")
    return v


def _pair(name: str, value: Any) -> tuple[float, float]:
    if len(value) != 2:
        raise ConfigError(f"{name} must be two numbers, got {value!r}")
    return (_finite(name, value[0]), _finite(name, value[1]))


@dataclass(frozen=True)
class Anatomy:
    """The femur itself (every length in mm; cross-sections and the epiphysis at ``size`` = 1
    are scaled by ``size``; lengths along the shaft and microstructure are not).

    Attributes
    ----------
    group : {'sham', 'OVX+Exos', 'OVX'}
        Trabecular design (:data:`GROUP_DESIGNS`).
    size : float
        Scale of the macro-anatomy (0.3-1.5; 1 = an adult female rat: condyles about 5.2 mm
        ML, shaft 3.25 x 2.8 mm). Cross-sections, cortical thicknesses and the epiphysis
        (plate level, condyles, notch, groove) scale with it; lengths along the shaft (flare,
        cortical thickening, the trabecular profile), trabeculae and the growth plate's
        thickness do not.
    bv_tv, cell_mm, perforated, epiphysis_bv_tv : float, optional
        Overrides of the group design (fractions 0.02-0.5, 0.06-0.4 mm, 0-0.7, 0.1-0.6).
    anisotropy : float
        Elongation of the metaphyseal field along the axis (1-3; 1.3: mostly longitudinal
        plates).
    plate_present : bool
        False: an adult femur with a closed plate (no cartilage, a bony scar).
    plate_thickness_mm : float
        Cartilage thickness along the plate's normal (0.04-0.3 mm).
    plate_shape : {'flat', 'dome', 'w'}
        Mid-surface: flat, a dome (centre proximal) or a W across the condyles (ML).
    plate_amplitude_mm : float
        Peak-to-trough height of the dome or W (0-0.4 mm).
    plate_ripple_mm : float
        Largest deviation of a smooth random ripple added to the shape (0-0.08 mm).
    plate_tilt_deg, plate_tilt_azimuth_deg : float
        Angle of the plate's normal to the shaft axis (0-20 degrees) and the direction
        (degrees from +x, lateral, towards +y, anterior) towards which it leans.
    bridged_fraction : float
        Fraction of the plate's area crossed by bony bridges (0-0.95; > 0.5: mostly closed).
    bridge_size_mm : float
        Typical bridge diameter (0.02-0.3 mm).
    plate_level_mm : float
        Plate level on the axis, mm proximal of the condyles' distal-most point at size 1
        (1.5-2.5).
    primary_bv_tv, primary_mm : float
        Primary spongiosa BV/TV at the cartilage (0-0.7) and depth over which it fades
        (0.05-0.6 mm).
    shell_mm, diaphysis_cortex_mm, flare_mm : float
        At size 1: epiphyseal/metaphyseal cortical shell (0.04-0.25), diaphyseal cortex
        (0.2-0.9); the length of the metaphyseal flare (1-4 mm at any size).
    cartilage_grey : float
        Grey level of growth-plate cartilage (8-bit, reference window; 60-120, default 68).
    ring_open_fraction : float
        Share of the plate's circumference (0-1) where the cortex is open: there the growth
        plate reaches the periosteal surface through the perichondrial ring (soft tissue, the
        cartilage's grey), so slices through it have no closed cortical ring; elsewhere a
        thin bony bark covers it.
    """

    group: str = "sham"
    size: float = 0.55
    bv_tv: float | None = None
    cell_mm: float | None = None
    perforated: float | None = None
    epiphysis_bv_tv: float | None = None
    anisotropy: float = 1.3
    plate_present: bool = True
    plate_thickness_mm: float = 0.15
    plate_shape: Literal["flat", "dome", "w"] = "dome"
    plate_amplitude_mm: float = 0.15
    plate_ripple_mm: float = 0.02
    plate_tilt_deg: float = 0.0
    plate_tilt_azimuth_deg: float = 0.0
    bridged_fraction: float = 0.03
    bridge_size_mm: float = 0.05
    plate_level_mm: float = 2.0
    primary_bv_tv: float = 0.45
    primary_mm: float = 0.30
    shell_mm: float = 0.10
    diaphysis_cortex_mm: float = 0.60
    flare_mm: float = 2.5
    cartilage_grey: float = 68.0
    ring_open_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.group not in GROUP_DESIGNS:
            raise ConfigError(f"group must be one of {', '.join(GROUP_DESIGNS)}, "
                              f"got {self.group!r}")
        if self.plate_shape not in ("flat", "dome", "w"):
            raise ConfigError(f"plate_shape must be 'flat', 'dome' or 'w', got "
                              f"{self.plate_shape!r}")
        _finite("size", self.size, 0.3, 1.5)
        for name, lo, hi in (("bv_tv", 0.02, 0.5), ("cell_mm", 0.06, 0.4),
                             ("perforated", 0.0, 0.7), ("epiphysis_bv_tv", 0.1, 0.6)):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name), lo, hi)
        for name, lo, hi in (
            ("anisotropy", 1.0, 3.0), ("plate_thickness_mm", 0.04, 0.3),
            ("plate_amplitude_mm", 0.0, 0.4), ("plate_ripple_mm", 0.0, 0.08),
            ("plate_tilt_deg", 0.0, 20.0), ("bridged_fraction", 0.0, 0.95),
            ("bridge_size_mm", 0.02, 0.3), ("plate_level_mm", 1.5, 2.5),
            ("primary_bv_tv", 0.0, 0.7), ("primary_mm", 0.05, 0.6), ("shell_mm", 0.04, 0.25),
            ("diaphysis_cortex_mm", 0.2, 0.9), ("flare_mm", 1.0, 4.0),
            ("cartilage_grey", 60.0, 120.0), ("ring_open_fraction", 0.0, 1.0),
        ):
            _finite(name, getattr(self, name), lo, hi)
        _finite("plate_tilt_azimuth_deg", self.plate_tilt_azimuth_deg)

    @property
    def design(self) -> TrabecularDesign:
        """The group design with this femur's overrides."""
        d = GROUP_DESIGNS[self.group]
        return TrabecularDesign(
            bv_tv=d.bv_tv if self.bv_tv is None else float(self.bv_tv),
            cell_mm=d.cell_mm if self.cell_mm is None else float(self.cell_mm),
            perforated=d.perforated if self.perforated is None else float(self.perforated),
            epiphysis_bv_tv=(d.epiphysis_bv_tv if self.epiphysis_bv_tv is None
                             else float(self.epiphysis_bv_tv)),
            taper=d.taper,
        )


@dataclass(frozen=True)
class Specimen:
    """How the femur sits in its sample tube (lengths in mm, grey in 8-bit reference units).

    Attributes
    ----------
    soft_tissue_coverage : float
        Fraction of the bone surface carrying muscle/tendon remnants (0-1).
    soft_tissue_mm : float
        Largest remnant thickness (0-1 mm).
    articular_cartilage_mm : float
        Articular cartilage on the distal joint surfaces (0-0.2 mm).
    bubbles : int
        Air bubbles in the fluid (0-50); about half rest on the bone.
    bubble_radius_mm : (float, float)
        Range of bubble radii (0.01-1 mm).
    foam_end : {None, 'distal', 'proximal'}
        Scan end against which a foam spacer sits (None: no foam).
    foam_mm : float, optional
        Foam thickness from that scan end (0.05-2 mm); default: at the distal end, the fluid
        gap plus 0.1 mm (the condyles press into the foam); at the proximal end 0.4 mm.
    foam_cell_mm : float
        Foam cell size (filter sigma of its wall field, 0.04-0.4 mm).
    tube_clearance_mm : float
        Fluid between the bone's widest reach and the tube's inner wall (0-3 mm).
    tube_wall_mm : float
        Tube wall thickness (0.05-1 mm).
    bone_offset_mm : (float, float)
        Offset (y, x) of the bone axis (at mid-scan) from the tube axis: a bone lying against
        the tube wall.
    fluid_grey, tube_grey, soft_tissue_grey, foam_grey : float
        Grey levels (8-bit, reference window).
    """

    soft_tissue_coverage: float = 0.3
    soft_tissue_mm: float = 0.15
    articular_cartilage_mm: float = 0.06
    bubbles: int = 0
    bubble_radius_mm: tuple[float, float] = (0.03, 0.15)
    foam_end: Literal["distal", "proximal"] | None = None
    foam_mm: float | None = None
    foam_cell_mm: float = 0.08
    tube_clearance_mm: float = 0.15
    tube_wall_mm: float = 0.2
    bone_offset_mm: tuple[float, float] = (0.0, 0.0)
    fluid_grey: float = 58.0
    tube_grey: float = 52.0
    soft_tissue_grey: float = 62.0
    foam_grey: float = 55.0

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("soft_tissue_coverage", 0.0, 1.0), ("soft_tissue_mm", 0.0, 1.0),
            ("articular_cartilage_mm", 0.0, 0.2), ("foam_cell_mm", 0.04, 0.4),
            ("tube_clearance_mm", 0.0, 3.0), ("tube_wall_mm", 0.05, 1.0),
            ("fluid_grey", 0.0, 255.0), ("tube_grey", 0.0, 255.0),
            ("soft_tissue_grey", 0.0, 255.0), ("foam_grey", 0.0, 255.0),
        ):
            _finite(name, getattr(self, name), lo, hi)
        if not (isinstance(self.bubbles, (int, np.integer)) and 0 <= self.bubbles <= 50):
            raise ConfigError(f"bubbles must be an integer 0..50, got {self.bubbles!r}")
        lo, hi = _pair("bubble_radius_mm", self.bubble_radius_mm)
        if not 0.01 <= lo <= hi <= 1.0:
            raise ConfigError(f"bubble_radius_mm must be 0.01 <= low <= high <= 1 (mm), got "
                              f"{self.bubble_radius_mm!r}")
        if self.foam_end not in (None, "distal", "proximal"):
            raise ConfigError(f"foam_end must be None, 'distal' or 'proximal', got "
                              f"{self.foam_end!r}")
        if self.foam_mm is not None:
            _finite("foam_mm", self.foam_mm, 0.05, 2.0)
        _pair("bone_offset_mm", self.bone_offset_mm)


@dataclass(frozen=True)
class ScanSettings:
    """Placement of the specimen in the scanner and the reconstruction.

    Attributes
    ----------
    voxel_um : float
        Isotropic voxel size (5-40 µm).
    tilt_deg, tilt_azimuth_deg : float
        Angle between the bone axis and the scanner's rotation axis (0-15 degrees) and the
        in-plane direction (degrees from +x towards +y) of the tilt (see the module notes).
    spin_deg : float
        Rotation of the bone about the rotation axis (any angle).
    distal_first : bool
        True: the distal end is at slice 0; False: the bone is turned end over end (a rotation,
        not a mirror image) and the distal end is last.
    tube_offset_mm : (float, float)
        Offset (y, x) of the tube axis from the rotation centre (image centre).
    fov_margin_mm : float
        Air between the tube's outer wall and the field-of-view edge (-2..2 mm; negative crops
        the tube, or the fluid, at the edge).
    distal_margin_mm : float
        Fluid (or foam) between the bone's distal-most point and the scan's distal end
        (-0.3..2 mm; negative cuts the condyles).
    proximal_margin_mm : float
        Scan length beyond the design VOI's proximal end along the axis (0-3 mm).
    bit_depth : {8, 16}
    cs_window : (float, float), optional
        NRecon CS window of the output (default :data:`REFERENCE_CS_WINDOW`).
    blur_vox : float
        Gaussian partial-volume blur sigma (0-3 voxels).
    noise_sd : float
        Standard deviation of the (blur-correlated) noise in the output, 8-bit reference grey
        (0-40).
    cupping_grey : float
        Beam-hardening cupping: the grey drop (8-bit reference) at the centre of a large
        solid bone region; the drop follows a 0.5 x ``size`` mm Gaussian average of the
        attenuation around each point (0-60).
    rings : int
        Ring artefacts about the rotation centre (0-50).
    ring_amplitude : float
        Largest ring amplitude (8-bit reference grey, 0-60).
    specks : int
        Bright specks (1-3 voxel cubes, grey 200-255) in the fluid, air or foam (0-200).
    round_roi : bool
        NRecon ``ON_ROUND``: exact zeros outside the inscribed circle, at least 1 inside.
    first_section : int
        Section number of slice 0 in the file names (>= 0).
    index_length : {4, 8}
        Digits of the section number in the file names.
    """

    voxel_um: float = 15.0
    tilt_deg: float = 0.0
    tilt_azimuth_deg: float = 0.0
    spin_deg: float = 0.0
    distal_first: bool = True
    tube_offset_mm: tuple[float, float] = (0.0, 0.0)
    fov_margin_mm: float = 0.05
    distal_margin_mm: float = 0.15
    proximal_margin_mm: float = 0.4
    bit_depth: int = 8
    cs_window: tuple[float, float] | None = None
    blur_vox: float = 0.8
    noise_sd: float = 7.0
    cupping_grey: float = 10.0
    rings: int = 0
    ring_amplitude: float = 6.0
    specks: int = 0
    round_roi: bool = False
    first_section: int = 0
    index_length: int = 4

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("voxel_um", 5.0, 40.0), ("tilt_deg", 0.0, 15.0), ("fov_margin_mm", -2.0, 2.0),
            ("distal_margin_mm", -0.3, 2.0), ("proximal_margin_mm", 0.0, 3.0),
            ("blur_vox", 0.0, 3.0), ("noise_sd", 0.0, 40.0), ("cupping_grey", 0.0, 60.0),
            ("ring_amplitude", 0.0, 60.0),
        ):
            _finite(name, getattr(self, name), lo, hi)
        _finite("tilt_azimuth_deg", self.tilt_azimuth_deg)
        _finite("spin_deg", self.spin_deg)
        _pair("tube_offset_mm", self.tube_offset_mm)
        if self.bit_depth not in (8, 16):
            raise ConfigError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if self.cs_window is not None:
            lo, hi = _pair("cs_window", self.cs_window)
            if not lo < hi:
                raise ConfigError(f"cs_window must be (min, max) with min < max, got "
                                  f"{self.cs_window!r}")
        for name, hi in (("rings", 50), ("specks", 200)):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and 0 <= v <= hi):
                raise ConfigError(f"{name} must be an integer 0..{hi}, got {v!r}")
        if not (isinstance(self.first_section, (int, np.integer)) and self.first_section >= 0):
            raise ConfigError(f"first_section must be an integer >= 0, got "
                              f"{self.first_section!r}")
        if self.index_length not in (4, 8):
            raise ConfigError(f"index_length must be 4 or 8, got {self.index_length!r}")

    @property
    def window(self) -> tuple[float, float]:
        """The output CS window (``cs_window`` or the reference window)."""
        return REFERENCE_CS_WINDOW if self.cs_window is None else (
            float(self.cs_window[0]), float(self.cs_window[1]))


# --------------------------------------------------------------------------------------------
# implicit geometry


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (blend radius ``k``)."""
    h = np.maximum(np.float32(k) - np.abs(a - b), 0.0)
    out = np.minimum(a, b)
    out -= h * h * np.float32(0.25 / k)
    return out


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def _ellipsoid(z: np.ndarray, y: np.ndarray, x: np.ndarray, c: Sequence[float],
               r: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    qz, qy, qx = (z - np.float32(c[0])) / np.float32(r[0]), (y - np.float32(c[1])) / np.float32(
        r[1]), (x - np.float32(c[2])) / np.float32(r[2])
    k0 = np.sqrt(qz * qz + qy * qy + qx * qx)
    k1 = np.sqrt((qz / np.float32(r[0])) ** 2 + (qy / np.float32(r[1])) ** 2
                 + (qx / np.float32(r[2])) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))


def _secondary_profile(d: np.ndarray) -> np.ndarray:
    """Relative design BV/TV of the secondary spongiosa at ``d`` mm proximal of the cartilage:
    0.75 rising to 1.3 at 1 mm, falling linearly to 0.7 at 3.5 mm, fading to 0 at 5 mm."""
    d = np.asarray(d, dtype=np.float32)
    rise = 0.75 + 0.55 * smoothstep(d)
    fall = 1.3 - 0.6 * (d - 1.0) / 2.5
    tail = 0.7 * (1.0 - smoothstep((d - 3.5) / (_SECONDARY_END_MM - 3.5)))
    out = np.where(d < 1.0, rise, np.where(d < 3.5, fall, tail))
    return np.where(d < 0, 0.0, out).astype(np.float32)


class FemurModel:
    """The continuous femur: tissue labels as a function of anatomical coordinates (mm).

    Parameters
    ----------
    anatomy : Anatomy
    specimen : Specimen
        Only its soft-tissue and articular-cartilage settings are used (tissue attached to
        the bone moves with it).
    seed : int
        Seed of every random structure; the model never depends on a scan.

    Notes
    -----
    :meth:`classify` is the truth: a scan's labels are :meth:`classify` at its voxel centres.
    Attributes ending in ``_mm`` are anatomical positions or lengths in mm.
    """

    def __init__(self, anatomy: Anatomy, specimen: Specimen, seed: int) -> None:
        t0 = time.perf_counter()
        self.anatomy, self.specimen, self.seed = anatomy, specimen, int(seed)
        a, s = anatomy, float(anatomy.size)
        self.design = a.design
        self.plate_level_mm = a.plate_level_mm * s
        self.flare_mm = float(a.flare_mm)
        self.shell_mm = a.shell_mm * s
        self.diaphysis_cortex_mm = a.diaphysis_cortex_mm * s
        self._s = s

        def rng(k: int) -> np.random.Generator:
            return np.random.default_rng(np.random.SeedSequence([self.seed, 17, k]))

        # ---- plate frame: normal n (anatomical), in-plane axes e_u (~x), e_v (~y)
        tau, beta = math.radians(a.plate_tilt_deg), math.radians(a.plate_tilt_azimuth_deg)
        n = np.array([math.cos(tau), math.sin(tau) * math.sin(beta),
                      math.sin(tau) * math.cos(beta)])
        rot = rotation_taking_z_to(n)
        self.plate_normal = n
        self.plate_u = rot @ np.array([0.0, 0.0, 1.0])
        self.plate_v = rot @ np.array([0.0, 1.0, 0.0])
        self.plate_centre = np.array([self.plate_level_mm, 0.0, 0.0])
        ml, ap = _META_BA[1] * s, _META_BA[0] * s
        ur = (ml + 0.2) / math.cos(tau) + 0.1
        vr = (ap + 0.2) / math.cos(tau) + 0.1
        hr = _RASTER_MM
        nu, nv = int(math.ceil(2 * ur / hr)) + 1, int(math.ceil(2 * vr / hr)) + 1
        self._raster_origin = (-vr, -ur)
        uu = (-ur + hr * np.arange(nu)).astype(np.float32)[None, :]
        vv = (-vr + hr * np.arange(nv)).astype(np.float32)[:, None]

        # mid-surface h(u, v) and its slope
        amp = float(a.plate_amplitude_mm)
        if a.plate_shape == "dome":
            rho2 = np.minimum((uu / np.float32(ml)) ** 2 + (vv / np.float32(ap)) ** 2, 1.0)
            h = amp * (0.5 - rho2)
        elif a.plate_shape == "w":
            h = 0.5 * amp * np.cos(2.0 * np.pi * uu / np.float32(ml)) + 0.0 * vv
        else:
            h = np.zeros((nv, nu), dtype=np.float32)
        h = np.broadcast_to(h, (nv, nu)).astype(np.float32)
        sig = _RIPPLE_SIGMA_MM / hr
        if a.plate_ripple_mm > 0:
            rip = ndimage.gaussian_filter(rng(1).standard_normal((nv, nu), dtype=np.float32),
                                          sig, mode="wrap", truncate=3.0)
            inner = (uu / ml) ** 2 + (vv / ap) ** 2 < 1.0
            rip /= np.float32(max(float(np.abs(rip[inner]).max()), 1e-12))
            h = h + np.float32(a.plate_ripple_mm) * rip
        self._h = h
        self._raster_uv = (uu, vv)
        # footprint: raster points whose mid-surface point lies inside the endocortical region
        pz, py, px = self._plate_points(h)
        fd = self.outer_distance(pz.ravel(), py.ravel(), px.ravel())
        fp = (fd < -self.cortex_thickness(pz.ravel())).reshape(h.shape)
        del pz, py, px, fd
        self._footprint = fp
        # thickness: smooth ±8 % variation with zero mean over the footprint
        gv, gu = np.gradient(h, hr)
        slope = np.sqrt(1.0 + gv * gv + gu * gu).astype(np.float32)
        var = np.clip(gaussian_noise_field(rng(2), (nv, nu), 0.3 / hr), -1.5, 1.5) / 1.5
        if fp.any():
            var -= np.float32(var[fp].mean())
        thick = np.float32(a.plate_thickness_mm) * (1.0 + np.float32(_THICKNESS_VARIATION)
                                                    * var)
        self._half = (0.5 * thick * slope).astype(np.float32)  # half thickness along n
        # bridges: a 2-D field above its (1 - fraction) quantile over the footprint
        bsig = max(0.4 * a.bridge_size_mm / hr, 1.0)
        bf = ndimage.gaussian_filter(rng(3).standard_normal((nv, nu), dtype=np.float32), bsig,
                                     mode="wrap", truncate=3.0)
        if a.bridged_fraction > 0 and fp.any():
            q = float(np.quantile(bf[fp], 1.0 - a.bridged_fraction))
            self._bridged = bf > q
        else:
            self._bridged = np.zeros((nv, nu), dtype=bool)
        hf = ndimage.gaussian_filter(rng(4).standard_normal((nv, nu), dtype=np.float32),
                                     0.02 / hr, mode="wrap", truncate=3.0)
        self._holes = hf > float(np.quantile(hf, 1.0 - _EPI_PLATE_HOLES))

        # design reference: the proximal-most point of the cartilage (or scar) over the plate
        top = h + (self._half if a.plate_present else np.float32(0.5 * _SCAR_MM))
        tz = self._plate_points(top)[0]
        bot = h - (self._half if a.plate_present else np.float32(0.5 * _SCAR_MM))
        bz = self._plate_points(bot)[0]
        self.design_reference_mm = float(tz[fp].max()) if fp.any() else self.plate_level_mm
        self.design_distal_cartilage_mm = float(bz[fp].min()) if fp.any() else \
            self.plate_level_mm
        plate_top = float(tz.max())

        # perichondrial ring: open where a smooth random function of the angle about the plate's
        # centre is below its ``ring_open_fraction`` quantile
        r_rng = rng(11)
        self._ring_harmonics = (r_rng.standard_normal(3) / np.arange(1, 4),
                                r_rng.uniform(0.0, 2.0 * np.pi, 3))
        theta = np.linspace(-np.pi, np.pi, 3600, endpoint=False)
        self._ring_level = float(np.quantile(self._ring_angle_field(theta),
                                             a.ring_open_fraction)) \
            if a.ring_open_fraction < 1 else np.inf

        # ---- secondary spongiosa: sheet field (elongated along z) and perforation field
        d = self.design
        ymax, xmax = 2.05 * s, 2.7 * s
        self._bbox_yx = (ymax, xmax)
        z_lo = float(bz.min()) - 0.05
        self.trabecular_top_mm = plate_top + _SECONDARY_END_MM + 0.05
        hm = d.cell_mm / 4.0  # sheet field: 4 samples per filter sigma across the axis
        sig_f = (4.0 * a.anisotropy, 4.0, 4.0)
        f_rng, g_rng = rng(6), rng(7)
        self._sec = GridField.covering(
            (z_lo, -ymax, -xmax), (self.trabecular_top_mm, ymax, xmax), hm,
            lambda shp: sheet_field(gaussian_noise_field(f_rng, shp, sig_f)))
        # perforations: sigma 0.5 cell, sampled 3 times per sigma
        self._perf = GridField.covering(
            (z_lo, -ymax, -xmax), (self.trabecular_top_mm, ymax, xmax), d.cell_mm / 6.0,
            lambda shp: gaussian_noise_field(g_rng, shp, 3.0))
        self._g_lo = np.float32(special.ndtri(d.perforated)) if d.perforated > 0 else \
            np.float32(-np.inf)
        self._g_scale = np.float32(1.0 / d.taper)
        # ---- epiphyseal trabecular field
        he = _EPI_CELL_MM / 4.0
        e_rng = rng(8)
        self._epi = GridField.covering(
            (-0.05, -ymax, -xmax), (plate_top + 0.05, ymax, xmax), he,
            lambda shp: sheet_field(gaussian_noise_field(e_rng, shp, 4.0)))
        # ---- primary spongiosa field in plate coordinates (depth, v, u)
        self._primary: GridField | None = None
        if a.plate_present and a.primary_bv_tv > 0:
            hd, huv = 0.015, 0.01  # grid along the normal and across
            p_rng = rng(5)
            sig_p = (_PRIMARY_SIGMA[0] / hd, _PRIMARY_SIGMA[1] / huv, _PRIMARY_SIGMA[1] / huv)
            self._primary = GridField.covering(
                (0.0, -vr, -ur), (a.primary_mm, vr, ur), (hd, huv, huv),
                lambda shp: gaussian_noise_field(p_rng, shp, sig_p))
        # ---- soft tissue thickness field
        sp = specimen
        self._soft: GridField | None = None
        self._soft_max = float(sp.soft_tissue_mm) if sp.soft_tissue_coverage > 0 else 0.0
        if self._soft_max > 0:
            q = float(special.ndtri(1.0 - sp.soft_tissue_coverage)) if \
                sp.soft_tissue_coverage < 1 else -np.inf
            st_rng = rng(9)

            def soft_values(shp: tuple[int, int, int]) -> np.ndarray:
                phi = gaussian_noise_field(st_rng, shp, 4.0)
                return (self._soft_max * np.clip((phi - q) / 0.8, 0.0, 1.0)).astype(np.float32)

            self._soft = GridField.covering(
                (-0.6, -ymax - 0.6, -xmax - 0.6), (self.trabecular_top_mm + 2.0, ymax + 0.6,
                                                  xmax + 0.6), 0.05, soft_values)
        self._artic = float(sp.articular_cartilage_mm)
        self.articular_top_mm = self.plate_level_mm - 0.3 * s
        # reach of the bone and the tissue on it, about the axis
        self._radius = self._radius_profile()
        self.bone_radius_mm = float(self._radius[1].max())
        self.reach_mm = self.bone_radius_mm + max(self._soft_max, self._artic) + 0.02
        self._reach2 = np.float32(self.reach_mm**2)
        self._z_reach_lo = np.float32(-max(self._soft_max, self._artic) - 0.05)

        # ---- calibration: secondary threshold per depth, epiphyseal threshold
        cal = rng(10)
        self.secondary_scale, self._u_lut = self._calibrate_secondary(cal)
        self.epiphysis_threshold = self._calibrate_epiphysis(cal)
        self.build_seconds = time.perf_counter() - t0

    # -- geometry ------------------------------------------------------------------------

    def _plate_points(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomical (z, y, x) of raster points (u, v) at height ``w`` along the normal."""
        uu, vv = self._raster_uv
        c, n, eu, ev = self.plate_centre, self.plate_normal, self.plate_u, self.plate_v
        out = []
        for ax in range(3):
            out.append((np.float32(c[ax]) + np.float32(eu[ax]) * uu + np.float32(ev[ax]) * vv
                        + np.float32(n[ax]) * w).astype(np.float32))
        return out[0], out[1], out[2]

    def column_semi_axes(
        self, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Semi-axes of the shaft/metaphysis column at levels ``z`` (mm): AP ``B`` and ML
        ``A`` (mm), and their derivatives along z, as ``(B, A, dB/dz, dA/dz)``."""
        s = self._s
        t = np.clip((z - np.float32(self.plate_level_mm)) / np.float32(self.flare_mm), 0.0, 1.0)
        w = 1.0 - t * t * (3.0 - 2.0 * t)
        dw = np.where((t > 0) & (t < 1), -6.0 * t * (1.0 - t) / self.flare_mm, 0.0)
        b0, a0 = _SHAFT_BA[0] * s, _SHAFT_BA[1] * s
        b1, a1 = _META_BA[0] * s, _META_BA[1] * s
        return (np.float32(b0) + np.float32(b1 - b0) * w, np.float32(a0) + np.float32(a1 - a0) * w,
                (b1 - b0) * dw, (a1 - a0) * dw)

    def outer_distance(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm) to the periosteal surface: negative inside the bone.

        Parameters
        ----------
        z, y, x : (N,) ndarray of float32
            Anatomical coordinates in mm.

        Returns
        -------
        (N,) ndarray of float32
        """
        s = self._s
        z = np.asarray(z, np.float32)
        y = np.asarray(y, np.float32)
        x = np.asarray(x, np.float32)
        bb, aa, db, da = self.column_semi_axes(z)
        qx, qy = x / aa, y / bb
        k0 = np.sqrt(qx * qx + qy * qy)
        k1 = np.sqrt((qx / aa) ** 2 + (qy / bb) ** 2)
        col = k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))
        wsum = np.maximum(k0 * k0, np.float32(1e-12))
        slope = (da * qx * qx + db * qy * qy) / wsum
        col /= np.sqrt(1.0 + slope * slope).astype(np.float32)
        cap = np.float32(self.plate_level_mm - _CAP_BELOW_PLATE * s) - z
        f = _smax(col, cap, _CAP_BLEND * s)
        cz, cy, cx = (v * s for v in _CONDYLE_C)
        r = tuple(v * s for v in _CONDYLE_R)
        f = _smin(f, _ellipsoid(z, y, x, (cz, cy, cx), r), _BLEND * s)
        f = _smin(f, _ellipsoid(z, y, x, (cz, cy, -cx), r), _BLEND * s)
        f = _smin(f, _ellipsoid(z, y, x, tuple(v * s for v in _TROCHLEA_C),
                                tuple(v * s for v in _TROCHLEA_R)), _BLEND * s)
        notch = _ellipsoid(z, y, x, tuple(v * s for v in _NOTCH_C), tuple(v * s for v in _NOTCH_R))
        f = _smax(f, -notch, _CUT_BLEND * s)
        groove = np.sqrt((y - np.float32(_GROOVE_Y * s)) ** 2 + x * x) - np.float32(_GROOVE_R * s)
        groove = _smax(groove, z - np.float32(self.plate_level_mm - 0.25 * s), 0.1 * s)
        return _smax(f, -groove, _CUT_BLEND * s)

    def cortex_thickness(self, z: np.ndarray) -> np.ndarray:
        """Cortical thickness (mm) at anatomical level ``z`` (mm): the shell over the epiphysis
        and metaphysis, thickening proximally to the diaphyseal cortex."""
        t = smoothstep((np.asarray(z, np.float32) - np.float32(self.plate_level_mm
                                                               + _CORTEX_START))
                       / np.float32(_CORTEX_LENGTH))
        return (np.float32(self.shell_mm)
                + np.float32(self.diaphysis_cortex_mm - self.shell_mm) * t).astype(np.float32)

    def extreme_along(self, g: np.ndarray, lowest: bool) -> float:
        """Smallest (``lowest``) or largest value of ``g . a`` over the distal end of the bone
        (condyles and trochlea, with articular cartilage), mm."""
        s = self._s
        vals = []
        for c, r in (((_CONDYLE_C[0], _CONDYLE_C[1], _CONDYLE_C[2]), _CONDYLE_R),
                     ((_CONDYLE_C[0], _CONDYLE_C[1], -_CONDYLE_C[2]), _CONDYLE_R),
                     (_TROCHLEA_C, _TROCHLEA_R)):
            cc, rr = np.asarray(c) * s, np.asarray(r) * s
            proj, half = float(g @ cc), float(np.linalg.norm(rr * g))
            vals.append(proj - half if lowest else proj + half)
        pad = _BLEND * s / 4.0 + self._artic
        return min(vals) - pad if lowest else max(vals) + pad

    def _radius_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Largest distance (mm) of the bone from the axis at levels ``z`` from the distal end
        to 0.8 x size proximal of the plate, on a 0.025 x size grid (plus one grid step)."""
        s = self._s
        step = 0.025 * s
        ys = np.arange(-2.2 * s, 2.2 * s, step, dtype=np.float32)
        xs = np.arange(-2.9 * s, 2.9 * s, step, dtype=np.float32)
        yy, xx = (v.ravel() for v in np.meshgrid(ys, xs, indexing="ij"))
        rr = np.sqrt(yy * yy + xx * xx)
        zs = np.arange(0.0, self.plate_level_mm + 0.8 * s, 2 * step, dtype=np.float32)
        out = np.zeros(zs.size)
        for i, z in enumerate(zs):
            inside = self.outer_distance(np.full(yy.size, z, np.float32), yy, xx) < 0
            out[i] = float(rr[inside].max()) + step if inside.any() else 0.0
        return zs.astype(np.float64), out

    def radius_at(self, z: np.ndarray) -> np.ndarray:
        """Largest distance (mm) from the axis of the bone and the tissue on it (soft tissue,
        articular cartilage) at anatomical levels ``z`` (mm)."""
        z = np.asarray(z, dtype=np.float64)
        zs, rs = self._radius
        bb, aa, _, _ = self.column_semi_axes(z.astype(np.float32))
        col = np.maximum(bb, aa).astype(np.float64) + 0.02 * self._s
        near = np.interp(z, zs, rs, left=rs[0], right=rs[-1])
        r = np.where(z <= zs[-1], np.maximum(near, col), col)
        return r + max(self._soft_max, self._artic) + 0.02

    # -- plate lookups ---------------------------------------------------------------------

    def plate_coordinates(self, z: np.ndarray, y: np.ndarray, x: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plate-frame coordinates ``(w, v, u)`` (mm) of anatomical points: ``w`` along the
        plate's normal from its centre point on the axis, ``(u, v)`` in its plane."""
        dz = np.asarray(z, np.float32) - np.float32(self.plate_centre[0])
        out = []
        for e in (self.plate_normal, self.plate_v, self.plate_u):
            out.append(np.float32(e[0]) * dz + np.float32(e[1]) * y + np.float32(e[2]) * x)
        return out[0], out[1], out[2]

    def _ring_angle_field(self, theta: np.ndarray) -> np.ndarray:
        amp, phase = self._ring_harmonics
        k = np.arange(1, amp.size + 1)
        return (amp[None, :] * np.cos(k[None, :] * np.asarray(theta)[:, None]
                                      + phase[None, :])).sum(axis=1)

    def _raster_index(self, v: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nv, nu = self._h.shape
        iv = np.clip(np.rint((v - np.float32(self._raster_origin[0])) / np.float32(_RASTER_MM)),
                     0, nv - 1).astype(np.intp)
        iu = np.clip(np.rint((u - np.float32(self._raster_origin[1])) / np.float32(_RASTER_MM)),
                     0, nu - 1).astype(np.intp)
        return iv, iu

    def plate_surface(self, v: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mid-surface height ``h`` (mm along the normal) and cartilage half-thickness along
        the normal at plate coordinates ``(v, u)`` (mm)."""
        iv, iu = self._raster_index(np.asarray(v, np.float32), np.asarray(u, np.float32))
        return self._h[iv, iu], self._half[iv, iu]

    # -- calibration -----------------------------------------------------------------------

    def _interior_samples(self, rng: np.random.Generator, z0: float, z1: float, n: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ymax, xmax = self._bbox_yx
        z = rng.uniform(z0, z1, n).astype(np.float32)
        y = rng.uniform(-ymax, ymax, n).astype(np.float32)
        x = rng.uniform(-xmax, xmax, n).astype(np.float32)
        inside = self.outer_distance(z, y, x) < -self.cortex_thickness(z)
        return z[inside], y[inside], x[inside]

    def _secondary_u(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        f = np.abs(self._sec(z, y, x))
        w = np.clip((self._perf(z, y, x) - self._g_lo) * self._g_scale, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            return np.where(w > 0, f / np.maximum(w, np.float32(1e-12)), np.inf).astype(
                np.float32)

    def _depth(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Distance (mm, along the normal) proximal of the cartilage's proximal surface."""
        w, v, u = self.plate_coordinates(z, y, x)
        h, half = self.plate_surface(v, u)
        if not self.anatomy.plate_present:
            half = np.zeros_like(half)
        return w - h - half

    def _calibrate_secondary(self, rng: np.random.Generator) -> tuple[float, np.ndarray]:
        """Quantile table of ``u = |f| / w`` and the profile scale, from random points of the
        design VOI: bone where ``F(u) < scale * bv_tv * g(d)`` (``F`` the points' empirical
        distribution of ``u``, ``g`` the depth profile), with ``scale`` chosen so exactly
        ``bv_tv`` of the points are bone."""
        z0 = self.design_reference_mm + _VOI_DESIGN[0]
        z, y, x = self._interior_samples(rng, z0, z0 + _VOI_DESIGN[1], 400_000)
        prof = _secondary_profile(self._depth(z, y, x)).astype(np.float64)
        u = self._secondary_u(z, y, x)
        order = np.sort(u)
        lut = order[np.minimum((_PROB * order.size).astype(np.intp), order.size - 1)]
        rank = (np.searchsorted(order, u, side="right") / order.size).astype(np.float64)
        rank[~np.isfinite(u)] = np.inf
        with np.errstate(divide="ignore"):
            ratio = np.where(prof > 0, rank / np.maximum(prof, 1e-12), np.inf)
        target = self.design.bv_tv
        level = float(np.quantile(ratio, target)) if ratio.size else target
        return level / target, lut

    def _calibrate_epiphysis(self, rng: np.random.Generator) -> float:
        z, y, x = self._interior_samples(rng, 0.0, self.design_reference_mm, 300_000)
        w, v, u = self.plate_coordinates(z, y, x)
        h, half = self.plate_surface(v, u)
        epi = (w - h) <= -half
        vals = np.abs(self._epi(z[epi], y[epi], x[epi]))
        return float(np.quantile(vals, self.design.epiphysis_bv_tv)) if vals.size else 0.0

    # -- classification --------------------------------------------------------------------

    def classify(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Tissue label of anatomical points.

        Parameters
        ----------
        z, y, x : (N,) ndarray of float32
            Anatomical coordinates in mm.

        Returns
        -------
        (N,) ndarray of uint8
            :data:`LABELS` of bone, marrow, cartilage and the tissue attached to the bone;
            255 elsewhere (fluid, tube, air: the specimen's, decided in the scan frame).
        """
        z = np.asarray(z, np.float32).ravel()
        y = np.asarray(y, np.float32).ravel()
        x = np.asarray(x, np.float32).ravel()
        out = np.full(z.size, _OUTSIDE, dtype=np.uint8)
        cand = np.flatnonzero((y * y + x * x < self._reach2) & (z > self._z_reach_lo))
        if cand.size == 0:
            return out
        zc, yc, xc = z[cand], y[cand], x[cand]
        f = self.outer_distance(zc, yc, xc)
        reach = max(self._soft_max, self._artic)
        o = np.flatnonzero((f >= 0) & (f < reach))
        if o.size:
            lab = np.full(o.size, _OUTSIDE, dtype=np.uint8)
            if self._soft is not None:
                lab[f[o] < self._soft(zc[o], yc[o], xc[o])] = _SOFT
            if self._artic > 0:
                lab[(f[o] < self._artic) & (zc[o] < self.articular_top_mm)] = _ARTIC
            out[cand[o]] = lab
        ins = np.flatnonzero(f < 0)
        cort = f[ins] > -self.cortex_thickness(zc[ins])
        out[cand[ins[cort]]] = _CORT
        if self.anatomy.plate_present and self.anatomy.ring_open_fraction > 0:
            c = cand[ins[cort]]
            w, v, u = self.plate_coordinates(z[c], y[c], x[c])
            iv, iu = self._raster_index(v, u)
            ring = np.abs(w - self._h[iv, iu]) < self._half[iv, iu]
            if np.isfinite(self._ring_level):
                k = np.flatnonzero(ring)
                ring[k] = self._ring_angle_field(np.arctan2(v[k], u[k])) <= self._ring_level
            out[c[ring]] = _RING
        endo = ins[~cort]
        if endo.size:
            out[cand[endo]] = self._interior(zc[endo], yc[endo], xc[endo])
        return out

    def _interior(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = self.anatomy
        lab = np.full(z.size, _MARROW, dtype=np.uint8)
        w, v, u = self.plate_coordinates(z, y, x)
        iv, iu = self._raster_index(v, u)
        dist = w - self._h[iv, iu]
        if a.plate_present:
            half = self._half[iv, iu]
            cart = np.abs(dist) < half
            epi_region = dist <= -half
            depth = dist - half
            epi_plate = epi_region & (dist > -half - np.float32(_EPI_PLATE_MM)) & \
                ~self._holes[iv, iu]
        else:
            cart = np.zeros(z.size, dtype=bool)
            epi_region = dist < 0
            depth = dist
            epi_plate = np.abs(dist) < np.float32(0.5 * _SCAR_MM)
            epi_plate &= ~self._holes[iv, iu]
        e = np.flatnonzero(epi_region)
        if e.size:
            ev = np.abs(self._epi(z[e], y[e], x[e]))
            lab[e[ev < np.float32(self.epiphysis_threshold)]] = _EPI
        m = np.flatnonzero((depth >= 0) & (depth < np.float32(_SECONDARY_END_MM)))
        if m.size:
            dm = depth[m]
            p = np.float32(self.design.bv_tv * self.secondary_scale) * _secondary_profile(dm)
            thr = np.interp(p, _PROB, self._u_lut).astype(np.float32)
            bone = self._secondary_u(z[m], y[m], x[m]) < thr
            lab[m[bone]] = _TRAB
            if self._primary is not None:
                k = np.flatnonzero(dm < np.float32(a.primary_mm))
                if k.size:
                    dk = dm[k]
                    rho = a.primary_bv_tv * (1.0 - dk / np.float32(a.primary_mm)) ** 1.5
                    thr_p = special.ndtri(np.clip(1.0 - rho, 1e-6, 1.0)).astype(np.float32)
                    mk = m[k]
                    pv = self._primary(dk, v[mk], u[mk])
                    lab[mk[pv > thr_p]] = _PRIM
        if a.plate_present:
            lab[epi_plate] = _EPI
            lab[cart] = _CART
            lab[cart & self._bridged[iv, iu]] = _BRIDGE
        else:
            lab[epi_plate] = _BRIDGE
        return lab


# --------------------------------------------------------------------------------------------
# truth records


@dataclass(frozen=True)
class ReferenceTruth:
    """The growth-plate reference of a scan, by ctmorph's definition (module notes).

    Attributes
    ----------
    section : int
        Reference section (axial section index; section ``k`` is centred at ``t = k dz``).
    axis_mm : float
        ``t`` of the reference section: mm along the axis from the axis point in slice 0's
        plane (negative when the distal end is last).
    anatomical_mm : float
        The same plane's anatomical level: mm proximal of the condyles' distal-most level.
    slice_position : float
        Scan z index (fractional) where the axis crosses the reference plane.
    slice_index : int
        That position rounded (the array index a tilted scan's reference is reported at).
    section_number : int
        ``first_section + slice_index`` (the section number in the file names).
    distal_section, distal_axis_mm, distal_anatomical_mm, distal_slice_index, \
distal_section_number
        The same for the distal-most section holding cartilage.
    design_anatomical_mm : float
        The continuous model's proximal-most cartilage level (mm, anatomical), before voxels.
    """

    section: int
    axis_mm: float
    anatomical_mm: float
    slice_position: float
    slice_index: int
    section_number: int
    distal_section: int
    distal_axis_mm: float
    distal_anatomical_mm: float
    distal_slice_index: int
    distal_section_number: int
    design_anatomical_mm: float


@dataclass(frozen=True)
class TruthVoi:
    """The truth trabecular VOI (see the module notes).

    Attributes
    ----------
    offset_mm, height_mm : float
        Placement (mm proximal of the reference, length).
    first_section, last_section : int
        Axial section range (inclusive), distal to proximal.
    slice_indices : (int, int)
        Scan z indices where the axis crosses the first and the last section.
    voi_first_slice, voi_last_slice : int
        Section numbers (file names) of those crossings, the lower first (as ctmorph reports
        ``voi_first_slice``/``voi_last_slice``).
    complete : bool
        The VOI lies inside the scan (it touches neither the first nor the last slice).
    n_voxels : int
        Voxels in the VOI.
    bv_tv : float
        Bone voxels / VOI voxels (fraction; NaN for an empty VOI).
    bv_tv_design : float
        The design target (fraction).
    """

    offset_mm: float
    height_mm: float
    first_section: int
    last_section: int
    slice_indices: tuple[int, int]
    voi_first_slice: int
    voi_last_slice: int
    complete: bool
    n_voxels: int
    bv_tv: float
    bv_tv_design: float


@dataclass(eq=False)
class RealisticFemur:
    """A realistic synthetic femur scan and its truth.

    Attributes
    ----------
    grey : (Z, Y, X) ndarray of uint8 or uint16
        The reconstruction under :attr:`cs_window` (``bit_depth`` bits).
    labels : (Z, Y, X) ndarray of uint8
        :data:`LABELS` per voxel (the truth, before blur, noise and artefacts).
    voi_mask : (Z, Y, X) ndarray of bool
        The truth VOI (empty without a reference).
    reference : ReferenceTruth or None
        None when the femur has no growth-plate cartilage (adult).
    voi : TruthVoi or None
        None without a reference.
    anatomy, specimen, scan : Anatomy, Specimen, ScanSettings
    seed : int
    rotation : (3, 3) ndarray
        ``M``: anatomical vectors to scan vectors (``p = origin_mm + M a``).
    origin_mm : (3,) ndarray
        ``C``: scan position (mm) of the anatomical origin.
    axis_point_mm : (3,) ndarray
        ``A``: where the bone axis crosses slice 0's plane (scan mm).
    layout : dict
        Derived numbers: field of view, tube and bubble geometry, timings.
    model : FemurModel
        The continuous femur (labels at any anatomical point).
    """

    grey: np.ndarray
    labels: np.ndarray
    voi_mask: np.ndarray
    reference: ReferenceTruth | None
    voi: TruthVoi | None
    anatomy: Anatomy
    specimen: Specimen
    scan: ScanSettings
    seed: int
    rotation: np.ndarray
    origin_mm: np.ndarray
    axis_point_mm: np.ndarray
    layout: dict[str, Any]
    model: FemurModel = field(repr=False)
    morphometry_cache: dict[str, float] | None = field(default=None, repr=False)

    @property
    def voxel_um(self) -> float:
        """Voxel size in µm."""
        return float(self.scan.voxel_um)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm."""
        v = self.scan.voxel_um / 1000.0
        return (v, v, v)

    @property
    def distal_end(self) -> Literal["first", "last"]:
        """Which end of the stack is distal."""
        return "first" if self.scan.distal_first else "last"

    @property
    def cs_window(self) -> tuple[float, float]:
        """CS window of :attr:`grey` (NRecon attenuation units)."""
        return self.scan.window

    @property
    def bone(self) -> np.ndarray:
        """(Z, Y, X) bool: bone (:data:`BONE_LABELS`)."""
        return self.labels >= _TRAB

    @property
    def endocortical(self) -> np.ndarray:
        """(Z, Y, X) bool: the endocortical region (:data:`ENDOCORTICAL_LABELS`)."""
        return (self.labels >= _MARROW) & (self.labels <= _BRIDGE)

    @property
    def axis_direction(self) -> np.ndarray:
        """(3,) unit vector of the bone axis, distal to proximal, scan frame ``(z, y, x)``."""
        return self.rotation[:, 0].copy()

    @property
    def axis_tilt_deg(self) -> float:
        """Angle (degrees) between the bone axis and the slice normal."""
        return math.degrees(math.acos(min(1.0, abs(float(self.rotation[0, 0])))))

    def anatomical_coordinates(self, index: np.ndarray) -> np.ndarray:
        """Anatomical coordinates (mm) of scan indices ``(..., 3)`` (fractional allowed)."""
        p = np.asarray(index, dtype=np.float64) * (self.scan.voxel_um / 1000.0)
        return (p - self.origin_mm) @ self.rotation

    def scan_index(self, anatomical_mm: np.ndarray) -> np.ndarray:
        """Scan indices (fractional) of anatomical points ``(..., 3)`` in mm."""
        a = np.asarray(anatomical_mm, dtype=np.float64)
        return (self.origin_mm + a @ self.rotation.T) / (self.scan.voxel_um / 1000.0)

    def axial_position(self, index: np.ndarray) -> np.ndarray:
        """Axial coordinate ``t`` (mm) of scan indices ``(..., 3)`` (module notes)."""
        p = np.asarray(index, dtype=np.float64) * (self.scan.voxel_um / 1000.0)
        return (p - self.axis_point_mm) @ self.axis_direction

    def departures(self) -> list[str]:
        """Short descriptions of how this femur departs from an ideal, untilted scan."""
        a, sp, sc = self.anatomy, self.specimen, self.scan
        out = [f"trabecular design {a.group}", f"size {a.size:g}", f"voxel {sc.voxel_um:g} um",
               f"{sc.bit_depth}-bit", "distal first" if sc.distal_first else "distal last"]
        if sc.tilt_deg > 0:
            out.append(f"tilt {sc.tilt_deg:g} deg toward {sc.tilt_azimuth_deg:g} deg")
        if sc.spin_deg % 360:
            out.append(f"spin {sc.spin_deg:g} deg")
        off = math.hypot(*sp.bone_offset_mm) + math.hypot(*sc.tube_offset_mm)
        if off > 0:
            out.append(f"off centre (bone {tuple(sp.bone_offset_mm)}, tube "
                       f"{tuple(sc.tube_offset_mm)} mm)")
        if not a.plate_present:
            out.append("no growth plate (adult, closed)")
        else:
            shape = "flat plate" if a.plate_shape == "flat" else \
                f"{a.plate_shape} plate {a.plate_amplitude_mm:g} mm high"
            out.append(f"{shape}, {a.plate_thickness_mm:g} mm thick")
            if a.plate_tilt_deg > 0:
                out.append(f"plate tilted {a.plate_tilt_deg:g} deg to the shaft")
            if a.bridged_fraction > 0:
                out.append(f"bridges {100 * a.bridged_fraction:g} %")
            if a.bridged_fraction > 0.5:
                out.append("mostly closed plate")
            if a.plate_thickness_mm <= 0.08:
                out.append("thin plate")
            if a.primary_bv_tv <= 0.3 or a.cartilage_grey >= 74:
                out.append(f"faint plate (primary spongiosa {100 * a.primary_bv_tv:g} %, "
                           f"cartilage grey {a.cartilage_grey:g})")
        d = a.design
        if d.bv_tv <= 0.1:
            out.append(f"sparse bone (BV/TV {100 * d.bv_tv:g} %)")
        if sp.bubbles:
            out.append(f"{sp.bubbles} bubbles")
        if sp.soft_tissue_coverage > 0 and sp.soft_tissue_mm > 0:
            out.append(f"muscle remnants {100 * sp.soft_tissue_coverage:g} % up to "
                       f"{sp.soft_tissue_mm:g} mm")
        if sp.foam_end:
            out.append(f"foam at the {sp.foam_end} end")
        if sc.rings:
            out.append(f"{sc.rings} rings")
        if sc.specks:
            out.append(f"{sc.specks} specks")
        if sc.round_roi:
            out.append("round ROI")
        if sc.cupping_grey > 0:
            out.append(f"cupping {sc.cupping_grey:g}")
        if sc.cs_window is not None and tuple(sc.cs_window) != REFERENCE_CS_WINDOW:
            out.append(f"CS window {sc.cs_window[0]:g}..{sc.cs_window[1]:g}")
        if sc.fov_margin_mm < 0:
            out.append("field of view cuts the tube")
        return out

    def truth_morphometry(self) -> dict[str, float]:
        """BV/TV (%), Tb.Th, Tb.Sp (mm), Tb.N (1/mm) and the rest of
        :func:`ctmorph.morphometry.trabecular_morphometry` of the truth bone in the truth VOI.

        Computed once (cached) on the VOI's bounding box plus 0.3 mm of context, with the
        endocortical region as the marrow space (the cortex bounds marrow), spacing in mm.
        Empty dict without a VOI.
        """
        if self.morphometry_cache is not None:
            return dict(self.morphometry_cache)
        if self.voi is None or self.voi.n_voxels == 0:
            self.morphometry_cache = {}
            return {}
        from ..morphometry import trabecular_morphometry

        idx = np.nonzero(self.voi_mask.any(axis=(1, 2)))[0]
        iy = np.nonzero(self.voi_mask.any(axis=(0, 2)))[0]
        ix = np.nonzero(self.voi_mask.any(axis=(0, 1)))[0]
        m = int(math.ceil(0.3 / self.spacing[0]))
        box = tuple(slice(max(0, int(r[0]) - m), min(n, int(r[-1]) + 1 + m))
                    for r, n in zip((idx, iy, ix), self.labels.shape, strict=True))
        lab = self.labels[box]
        res = trabecular_morphometry(lab >= _TRAB, self.voi_mask[box], spacing=self.spacing,
                                     marrow_space=(lab >= _MARROW) & (lab <= _BRIDGE))
        self.morphometry_cache = {k: float(v) for k, v in res.items()}
        return dict(self.morphometry_cache)

    def params(self) -> dict[str, Any]:
        """Everything needed to reproduce and describe the femur (JSON-ready)."""
        return {
            "seed": int(self.seed),
            "anatomy": _jsonable(asdict(self.anatomy)),
            "design": _jsonable(asdict(self.anatomy.design)),
            "specimen": _jsonable(asdict(self.specimen)),
            "scan_settings": _jsonable(asdict(self.scan)),
            "cs_window": [float(v) for v in self.cs_window],
        }

    def truth_record(self) -> dict[str, Any]:
        """JSON-ready truth: parameters, frame, reference, VOI, departures and the layout
        (without timings, so the record is the same on every run)."""
        nz, ny, nx = self.labels.shape
        first = int(self.scan.first_section)
        rec: dict[str, Any] = {
            **self.params(),
            "shape": [nz, ny, nx],
            "voxel_um": self.voxel_um,
            "bit_depth": int(self.scan.bit_depth),
            "distal_end": self.distal_end,
            "first_section": first,
            "axis_direction_zyx": _jsonable(self.axis_direction),
            "axis_point_mm": _jsonable(self.axis_point_mm),
            "axis_tilt_deg": round(self.axis_tilt_deg, 4),
            "anatomical_origin_mm": _jsonable(self.origin_mm),
            "anatomical_rotation": _jsonable(self.rotation),
            "reference": None if self.reference is None else _jsonable(asdict(self.reference)),
            "ref_slice": None if self.reference is None else self.reference.section_number,
            "voi": None if self.voi is None else _jsonable(asdict(self.voi)),
            "departures": self.departures(),
            "layout": _jsonable({k: v for k, v in self.layout.items() if k != "seconds"}),
        }
        if self.voi is not None:
            rec["voi_first_slice"] = self.voi.voi_first_slice
            rec["voi_last_slice"] = self.voi.voi_last_slice
        return rec

    def write_nrecon(self, folder: str | os.PathLike[str], *, file_type: str | None = None
                     ) -> Path:
        """Write the scan as an NRecon folder (log with voxel size, CS window, round-ROI flag).

        Parameters
        ----------
        folder : str or path
            The scan folder; its name is the scan name.
        file_type : {'bmp', 'tif', 'png'}, optional
            Default: 8-bit BMP, 16-bit TIFF.

        Returns
        -------
        pathlib.Path
        """
        from ..io.writer import write_nrecon_folder

        ft = file_type or ("bmp" if self.scan.bit_depth == 8 else "tif")
        return write_nrecon_folder(
            folder, self.grey, voxel_size_um=self.voxel_um,
            first_section=int(self.scan.first_section), index_length=int(self.scan.index_length),
            file_type=ft, cs_window=self.cs_window, round_roi=bool(self.scan.round_roi),
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return round(f, 6) + 0.0 if math.isfinite(f) else None
    return v


# --------------------------------------------------------------------------------------------
# the scan


@dataclass(frozen=True)
class _Bubble:
    centre: tuple[float, float, float]  # scan mm
    radius: float
    on_bone: bool


def _rotation(scan: ScanSettings) -> np.ndarray:
    """``M`` of the module notes."""
    s = 1.0 if scan.distal_first else -1.0
    flip = np.diag([s, 1.0, s])
    ph = math.radians(scan.spin_deg)
    spin = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(ph), -math.sin(ph)],
                     [0.0, math.sin(ph), math.cos(ph)]])
    t, a = math.radians(scan.tilt_deg), math.radians(scan.tilt_azimuth_deg)
    u = np.array([math.cos(t), math.sin(t) * math.sin(a), math.sin(t) * math.cos(a)])
    return rotation_taking_z_to(u) @ spin @ flip


def _layout(model: FemurModel, specimen: Specimen, scan: ScanSettings, voi_end_mm: float
            ) -> dict[str, Any]:
    """Scan geometry: rotation, origin, shape, tube (all in scan mm)."""
    vox = scan.voxel_um / 1000.0
    rot = _rotation(scan)
    g = rot[0, :]  # anatomical vector whose dot product with a is the scan z offset
    axis = rot[:, 0]
    distal = model.extreme_along(g, lowest=scan.distal_first)
    z_end = model.design_reference_mm + voi_end_mm + scan.proximal_margin_mm
    bb, aa, _, _ = model.column_semi_axes(np.array([z_end], np.float32))
    r_end = float(max(bb[0], aa[0]))
    lateral = math.hypot(g[1], g[2]) * r_end
    if scan.distal_first:
        lo_rel, hi_rel = distal - scan.distal_margin_mm, g[0] * z_end + lateral
    else:
        lo_rel, hi_rel = g[0] * z_end - lateral, distal + scan.distal_margin_mm
    nz = int(math.ceil((hi_rel - lo_rel) / vox))
    cz = -0.5 * vox - lo_rel
    length = nz * vox
    z_mid = (nz - 1) / 2.0 * vox
    t_mid = (z_mid - cz) / axis[0]  # anatomical level of the axis at mid-scan
    # in-plane reach of the bone about the tube axis: at each anatomical level, the axis
    # point's distance from the tube axis plus the bone's radius there
    tilt = math.radians(scan.tilt_deg)
    za = np.arange(-0.1, z_end + r_end * math.tan(tilt) + 0.1, 0.01)
    off_b = np.asarray(specimen.bone_offset_mm, dtype=np.float64)
    off_t = np.asarray(scan.tube_offset_mm, dtype=np.float64)
    shift = off_b[None, :] + (za - t_mid)[:, None] * axis[None, 1:]
    r_foot = float((np.hypot(shift[:, 0], shift[:, 1]) + model.radius_at(za)).max())
    r_in = r_foot + specimen.tube_clearance_mm
    r_out = r_in + specimen.tube_wall_mm
    half = float(np.hypot(*off_t)) + r_out + scan.fov_margin_mm
    nxy = max(32, int(math.ceil(2.0 * half / vox)))
    centre_yx = np.array([(nxy - 1) / 2.0 * vox] * 2)
    tube_yx = centre_yx + off_t
    c_yx = tube_yx + off_b - t_mid * axis[1:]
    origin = np.array([cz, c_yx[0], c_yx[1]])
    return {"rotation": rot, "origin_mm": origin, "shape": (nz, nxy, nxy),
            "tube_centre_mm": tube_yx, "tube_inner_mm": r_in, "tube_outer_mm": r_out,
            "scan_length_mm": length, "fov_mm": nxy * vox}


def _bubbles(model: FemurModel, specimen: Specimen, lay: dict[str, Any], rng: np.random.Generator
             ) -> list[_Bubble]:
    """Air bubbles in the fluid: about half resting on the bone (or its soft tissue), the rest
    free in the fluid or against the tube wall; none overlapping the bone."""
    out: list[_Bubble] = []
    vox_len = lay["scan_length_mm"]
    rot, origin = lay["rotation"], lay["origin_mm"]
    ty, tx = lay["tube_centre_mm"]
    r_in = lay["tube_inner_mm"]
    lo, hi = specimen.bubble_radius_mm
    for b in range(specimen.bubbles):
        r = float(rng.uniform(lo, hi))
        on_bone = b % 2 == 0
        for _ in range(20):
            n = 4000
            zz = rng.uniform(0.0, vox_len, n)
            rr = (r_in - r) * np.sqrt(rng.random(n))
            th = rng.uniform(0, 2 * np.pi, n)
            p = np.stack([zz, ty + rr * np.sin(th), tx + rr * np.cos(th)], axis=1)
            a = (p - origin) @ rot
            f = model.outer_distance(a[:, 0].astype(np.float32), a[:, 1].astype(np.float32),
                                     a[:, 2].astype(np.float32))
            ok = (f > r + 0.005) & (f < r + 0.03) if on_bone else f > r + 0.1
            hit = np.flatnonzero(ok)
            if hit.size:
                c = p[hit[0]]
                out.append(_Bubble((float(c[0]), float(c[1]), float(c[2])), r, on_bone))
                break
    return out


def _specks(rng: np.random.Generator, labels: np.ndarray, n: int, round_roi: bool
            ) -> list[tuple[int, int, int, int, float]]:
    """``n`` bright specks (z, y, x, cube size 1-3, grey 200-255 in 8-bit reference units)
    in air, fluid, bubbles or foam, at least 4 voxels from bone and soft tissue."""
    nz, ny, nx = labels.shape
    yc, xc, rad = (ny - 1) / 2.0, (nx - 1) / 2.0, min(ny, nx) / 2.0 - 4.0
    out: list[tuple[int, int, int, int, float]] = []
    for _ in range(400 * max(n, 1)):
        if len(out) == n:
            break
        size = int(rng.integers(1, 4))
        z = int(rng.integers(0, nz - size + 1))
        y = int(rng.integers(4, ny - size - 4))
        x = int(rng.integers(4, nx - size - 4))
        if round_roi and math.hypot(y - yc, x - xc) > rad - size:
            continue
        around = labels[max(0, z - 4): z + size + 4, y - 4: y + size + 4, x - 4: x + size + 4]
        if (around <= _FLUID).all():
            out.append((z, y, x, size, float(rng.uniform(200.0, 255.0))))
    return out


def _gaussian_weight_energy(sigma: float) -> float:
    """Sum of squared weights of scipy's 1-D Gaussian kernel (truncate 3)."""
    r = int(math.ceil(3.0 * sigma)) + 1
    delta = np.zeros(2 * r + 1)
    delta[r] = 1.0
    k = ndimage.gaussian_filter1d(delta, sigma, truncate=3.0, mode="constant")
    return float((k * k).sum())


def make_realistic_femur(
    anatomy: Anatomy | None = None,
    specimen: Specimen | None = None,
    scan: ScanSettings | None = None,
    *,
    seed: int = 0,
    voi_offset_mm: float = 1.0,
    voi_height_mm: float = 2.0,
) -> RealisticFemur:
    """Generate a realistic rat distal femur scan with its truth (deterministic by seed).

    Parameters
    ----------
    anatomy : Anatomy, optional
        The femur (default ``Anatomy()``: sham, size 0.55, open dome plate).
    specimen : Specimen, optional
        The tube, fluid, bubbles, soft tissue and foam (default ``Specimen()``).
    scan : ScanSettings, optional
        Placement and reconstruction (default ``ScanSettings()``: 15 µm, untilted, 8-bit).
    seed : int
        Seed of every random choice. The femur (anatomy and attached tissue) depends only on
        ``seed``, ``anatomy`` and ``specimen``; the scan's noise, rings, specks, bubbles and
        foam on ``seed`` and the settings.
    voi_offset_mm, voi_height_mm : float
        Truth VOI placement: mm proximal of the reference, and length (the scan covers the
        design VOI plus ``scan.proximal_margin_mm``).

    Returns
    -------
    RealisticFemur

    Raises
    ------
    ConfigError
        A parameter out of its range.

    Notes
    -----
    Memory: the label and grey volumes plus slab temporaries (about 40 bytes per voxel of a
    slab of ~1 M voxels) and the random-field grids (tens of MB at size 0.55, ~200 MB at 1).
    """
    anatomy = Anatomy() if anatomy is None else anatomy
    specimen = Specimen() if specimen is None else specimen
    scan = ScanSettings() if scan is None else scan
    _finite("voi_offset_mm", voi_offset_mm, 0.0, 10.0)
    _finite("voi_height_mm", voi_height_mm, 0.01, 10.0)
    t0 = time.perf_counter()
    model = FemurModel(anatomy, specimen, seed)
    t_model = time.perf_counter() - t0
    lay = _layout(model, specimen, scan, max(voi_offset_mm + voi_height_mm, sum(_VOI_DESIGN)))
    rot, origin = lay["rotation"], lay["origin_mm"]
    nz, ny, nx = lay["shape"]
    vox = scan.voxel_um / 1000.0

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([int(seed), 29, k]))

    # ---- specimen in the scan frame
    ty, tx = lay["tube_centre_mm"]
    jj = np.arange(ny) * vox
    kk = np.arange(nx) * vox
    r_t = np.hypot(jj[:, None] - ty, kk[None, :] - tx)
    base = np.full((ny, nx), _AIR, dtype=np.uint8)
    base[r_t < lay["tube_outer_mm"]] = _TUBE
    base[r_t < lay["tube_inner_mm"]] = _FLUID
    bubbles = _bubbles(model, specimen, lay, rng(1)) if specimen.bubbles else []
    foam: tuple[int, int] | None = None
    foam_field: GridField | None = None
    foam_thr = 0.0
    if specimen.foam_end is not None:
        at_start = (specimen.foam_end == "distal") == scan.distal_first
        fm = specimen.foam_mm
        if fm is None:
            fm = (max(scan.distal_margin_mm, 0.0) + 0.1 if specimen.foam_end == "distal"
                  else 0.4)
        nf = min(nz, max(1, int(round(fm / vox))))
        foam = (0, nf) if at_start else (nz - nf, nz)
        hf = specimen.foam_cell_mm / 5.0
        z0f, z1f = foam[0] * vox - vox, foam[1] * vox + vox
        ri = lay["tube_inner_mm"]
        f_rng = rng(2)
        foam_field = GridField.covering(
            (z0f, ty - ri, tx - ri), (z1f, ty + ri, tx + ri), hf,
            lambda shp: sheet_field(gaussian_noise_field(f_rng, shp, 5.0)))
        foam_thr = 0.5 * 0.02 / hf  # walls 0.02 mm thick (in grid samples: |f| < T)

    # ---- labels, slab by slab: anatomical coordinates of every voxel centre
    t1 = time.perf_counter()
    labels = np.empty((nz, ny, nx), dtype=np.uint8)
    slab = max(1, int(1_500_000 // (ny * nx)))
    yj = (jj - origin[1]).astype(np.float64)
    xk = (kk - origin[2]).astype(np.float64)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        zi = np.arange(z0, z1) * vox - origin[0]
        coords = []
        for c in range(3):
            a = (rot[0, c] * zi)[:, None, None] + (rot[1, c] * yj)[None, :, None] + \
                (rot[2, c] * xk)[None, None, :]
            coords.append(a.astype(np.float32).ravel())
        lab = model.classify(*coords).reshape(z1 - z0, ny, nx)
        del coords
        out = np.broadcast_to(base, lab.shape)
        np.copyto(lab, out, where=lab == _OUTSIDE)
        labels[z0:z1] = lab
    # bubbles replace fluid
    for b in bubbles:
        cz, cy, cx = b.centre
        r = b.radius
        lo = [max(0, int(math.floor((c - r) / vox))) for c in (cz, cy, cx)]
        hi = [min(n, int(math.ceil((c + r) / vox)) + 1) for c, n in zip((cz, cy, cx),
                                                                         (nz, ny, nx),
                                                                         strict=True)]
        if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
            continue
        gz, gy, gx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        ball = ((gz * vox - cz) ** 2 + (gy * vox - cy) ** 2 + (gx * vox - cx) ** 2) <= r * r
        part = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        part[ball & (part == _FLUID)] = _BUBBLE
    # foam: walls and air pores instead of fluid and bubbles at one scan end
    if foam is not None and foam_field is not None:
        inside = r_t < lay["tube_inner_mm"]
        iy, ix = np.nonzero(inside)
        for z in range(*foam):
            sl = labels[z]
            sel = (sl[iy, ix] == _FLUID) | (sl[iy, ix] == _BUBBLE)
            py, px = iy[sel], ix[sel]
            fv = np.abs(foam_field(np.full(py.size, z * vox, np.float32),
                                   (py * vox).astype(np.float32),
                                   (px * vox).astype(np.float32)))
            sl[py, px] = np.where(fv < np.float32(foam_thr), _FOAM, _AIR).astype(np.uint8)
    t_labels = time.perf_counter() - t1

    # ---- grey: levels, cupping, correlated noise, blur, rings, specks, window, bits
    t2 = time.perf_counter()
    levels = np.array(GREY_LEVELS, dtype=np.float32)
    levels[_FLUID] = specimen.fluid_grey
    levels[_TUBE] = specimen.tube_grey
    levels[_SOFT] = specimen.soft_tissue_grey
    levels[_FOAM] = specimen.foam_grey
    levels[_CART] = anatomy.cartilage_grey
    levels[_RING] = anatomy.cartilage_grey
    lut = np.zeros(256, dtype=np.float32)
    lut[: levels.size] = levels
    gmax = 255.0 if scan.bit_depth == 8 else 65535.0
    w_ref, w_out = REFERENCE_CS_WINDOW, scan.window
    # 8-bit reference grey -> attenuation -> output grey
    gain = (w_ref[1] - w_ref[0]) / 255.0 / (w_out[1] - w_out[0]) * gmax
    bias = (w_ref[0] - w_out[0]) / (w_out[1] - w_out[0]) * gmax
    grey = np.empty((nz, ny, nx), dtype=np.uint8 if scan.bit_depth == 8 else np.uint16)
    rings_grey = ring_profile(rng(3), ny, nx, scan.rings, scan.ring_amplitude) if scan.rings \
        else None
    speck_list = _specks(rng(4), labels, scan.specks, scan.round_roi) if scan.specks else []
    blur = float(scan.blur_vox)
    halo = int(math.ceil(3.0 * blur)) if blur > 0 else 0
    white_sd = scan.noise_sd / math.sqrt(_gaussian_weight_energy(blur) ** 3) if blur > 0 \
        else scan.noise_sd
    ds = max(1, int(round(0.05 / vox)))  # cupping on a ~0.05 mm grid
    sig_c = 0.5 * anatomy.size / (ds * vox)
    chunk = max(4, int(4_000_000 // (ny * nx)))
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        a, b = max(0, z0 - halo), min(nz, z1 + halo)
        g = lut[labels[a:b]]
        if scan.cupping_grey > 0:
            m = np.clip((g - np.float32(GREY_LEVELS[_AIR]))
                        / np.float32(GREY_LEVELS[_CORT] - GREY_LEVELS[_AIR]), 0.0, 1.0)
            py_, px_ = (-ny) % ds, (-nx) % ds
            mp = np.pad(m, ((0, 0), (0, py_), (0, px_)), mode="edge")
            small = mp.reshape(b - a, mp.shape[1] // ds, ds, mp.shape[2] // ds, ds).mean(
                axis=(2, 4))
            small = ndimage.gaussian_filter(small, (0.0, sig_c, sig_c), mode="constant",
                                            truncate=3.0)
            big = ndimage.zoom(small, (1, ds, ds), order=1, grid_mode=True,
                               mode="grid-constant")[:, :ny, :nx]
            g -= np.float32(scan.cupping_grey) * big
        if white_sd > 0:
            for z in range(a, b):
                r_ = np.random.default_rng(np.random.SeedSequence([int(seed), 31, z]))
                g[z - a] += np.float32(white_sd) * r_.standard_normal((ny, nx),
                                                                      dtype=np.float32)
        if blur > 0:
            ndimage.gaussian_filter(g, blur, mode="nearest", truncate=3.0, output=g)
        g = g[z0 - a: z1 - a]
        if rings_grey is not None:
            g += rings_grey
        for zs, ys, xs, size, level in speck_list:
            if z0 <= zs < z1:
                g[zs - z0: zs - z0 + size, ys: ys + size, xs: xs + size] = level
        g *= np.float32(gain)
        g += np.float32(bias)
        np.rint(g, out=g)
        np.clip(g, 0.0, gmax, out=g)
        grey[z0:z1] = g
    if scan.round_roi:
        yc, xc = (ny - 1) / 2.0, (nx - 1) / 2.0
        r2 = (np.arange(ny)[:, None] - yc) ** 2 + (np.arange(nx)[None, :] - xc) ** 2
        inside = r2 <= (min(ny, nx) / 2.0) ** 2
        grey[:, ~inside] = 0
        np.maximum(grey, 1, out=grey, where=inside[None])
    t_grey = time.perf_counter() - t2

    # ---- truth: axis, reference, VOI
    t3 = time.perf_counter()
    axis = rot[:, 0]
    axis_point = origin - (origin[0] / axis[0]) * axis  # on the axis, z = 0
    reference, voi, voi_mask = _truth(labels, axis, axis_point, origin, vox, scan,
                                      anatomy, model, voi_offset_mm, voi_height_mm)
    t_truth = time.perf_counter() - t3
    layout = {
        "shape": [nz, ny, nx],
        "n_voxels": int(nz * ny * nx),
        "scan_length_mm": lay["scan_length_mm"],
        "fov_mm": lay["fov_mm"],
        "tube_centre_yx_mm": [float(v) for v in lay["tube_centre_mm"]],
        "tube_inner_radius_mm": lay["tube_inner_mm"],
        "tube_outer_radius_mm": lay["tube_outer_mm"],
        "bone_radius_mm": model.bone_radius_mm,
        "bubbles": [asdict(b) for b in bubbles],
        "foam_slices": None if foam is None else list(foam),
        "specks": len(speck_list),
        "secondary_threshold_scale": model.secondary_scale,
        "seconds": {"model": t_model, "labels": t_labels, "grey": t_grey, "truth": t_truth,
                    "total": time.perf_counter() - t0},
    }
    logger.debug("realistic femur %s seed %d: %s voxels in %.1f s", anatomy.group, seed,
                 layout["shape"], layout["seconds"]["total"])
    return RealisticFemur(
        grey=grey, labels=labels, voi_mask=voi_mask, reference=reference, voi=voi,
        anatomy=anatomy, specimen=specimen, scan=scan, seed=int(seed), rotation=rot,
        origin_mm=origin, axis_point_mm=axis_point, layout=layout, model=model,
    )


def _section_slice(axis: np.ndarray, axis_point: np.ndarray, t: float, vox: float, nz: int
                   ) -> tuple[float, int]:
    """Scan z index (fractional, and rounded into the stack) where the axis is at ``t``."""
    pos = float((axis_point[0] + t * axis[0]) / vox)
    return pos, int(np.clip(round(pos), 0, nz - 1))


def _truth(labels: np.ndarray, axis: np.ndarray, axis_point: np.ndarray, origin: np.ndarray,
           vox: float, scan: ScanSettings, anatomy: Anatomy, model: FemurModel,
           voi_offset_mm: float, voi_height_mm: float
           ) -> tuple[ReferenceTruth | None, TruthVoi | None, np.ndarray]:
    nz, ny, nx = labels.shape
    voi_mask = np.zeros(labels.shape, dtype=bool)
    ci = np.nonzero(labels == _CART)
    if ci[0].size == 0:
        return None, None, voi_mask
    t = ((ci[0] * vox - axis_point[0]) * axis[0] + (ci[1] * vox - axis_point[1]) * axis[1]
         + (ci[2] * vox - axis_point[2]) * axis[2])
    sec = np.rint(t / vox).astype(np.int64)
    s_ref, s_dist = int(sec.max()) + 1, int(sec.min())
    first = int(scan.first_section)
    anat0 = float((axis_point - origin) @ axis)  # anatomical z of t = 0

    def at(s: int) -> tuple[float, float, float, int]:
        tt = s * vox
        pos, idx = _section_slice(axis, axis_point, tt, vox, nz)
        return tt, anat0 + tt, pos, idx

    tr, ar, pr, ir = at(s_ref)
    td, ad, _, idd = at(s_dist)
    reference = ReferenceTruth(
        section=s_ref, axis_mm=tr, anatomical_mm=ar, slice_position=pr, slice_index=ir,
        section_number=first + ir, distal_section=s_dist, distal_axis_mm=td,
        distal_anatomical_mm=ad, distal_slice_index=idd, distal_section_number=first + idd,
        design_anatomical_mm=model.design_reference_mm,
    )
    n_off = int(round(voi_offset_mm / vox))
    n_h = max(1, int(round(voi_height_mm / vox)))
    s0, s1 = s_ref + n_off, s_ref + n_off + n_h - 1
    jj = (np.arange(ny) * vox - axis_point[1]) * axis[1]
    kk = (np.arange(nx) * vox - axis_point[2]) * axis[2]
    plane = jj[:, None] + kk[None, :]
    n_vox = n_bone = 0
    for z in range(nz):
        tz = (z * vox - axis_point[0]) * axis[0] + plane
        s = np.rint(tz / vox)
        inside = (s >= s0) & (s <= s1)
        if not inside.any():
            continue
        lab = labels[z]
        m = inside & (lab >= _MARROW) & (lab <= _BRIDGE)
        voi_mask[z] = m
        n_vox += int(np.count_nonzero(m))
        n_bone += int(np.count_nonzero(m & (lab >= _TRAB)))
    _, i0 = _section_slice(axis, axis_point, s0 * vox, vox, nz)
    _, i1 = _section_slice(axis, axis_point, s1 * vox, vox, nz)
    complete = n_vox > 0 and not voi_mask[0].any() and not voi_mask[-1].any()
    voi = TruthVoi(
        offset_mm=float(voi_offset_mm), height_mm=float(voi_height_mm), first_section=s0,
        last_section=s1, slice_indices=(i0, i1), voi_first_slice=first + min(i0, i1),
        voi_last_slice=first + max(i0, i1), complete=bool(complete), n_voxels=n_vox,
        bv_tv=n_bone / n_vox if n_vox else float("nan"),
        bv_tv_design=float(anatomy.design.bv_tv),
    )
    return reference, voi, voi_mask


# --------------------------------------------------------------------------------------------
# the hard study

#: Folder stems of the study's groups.
_FOLDERS = {"sham": "sham", "OVX": "OVX", "OVX+Exos": "OVXExos", "adult": "adult"}


def realistic_study_design(*, seed: int = 2026, n_per_group: int = 4, size: float = 0.5
                           ) -> list[dict[str, Any]]:
    """The femurs of :func:`make_realistic_study`: one dict per femur.

    Each dict has ``scan`` (folder name), ``group`` (``sham``, ``OVX``, ``OVX+Exos`` or
    ``adult``), ``seed`` and the :class:`Anatomy`, :class:`Specimen` and
    :class:`ScanSettings` it is generated with (``anatomy``, ``specimen``, ``scan``). Femur
    ``k`` of a group takes row ``k mod 4`` of that group's table of departures (below), so the
    default ``n_per_group=4`` covers every departure; animals vary further by seed (BV/TV ±10 %,
    plate level, amplitude, rotation, the perichondrial ring open over 50-100 % of the
    circumference). The adult femur (no growth plate) is always added.

    Parameters
    ----------
    seed : int
        Study seed.
    n_per_group : int
        Femurs per group (>= 1).
    size : float
        Macro-anatomy scale of most femurs (the 9-10 µm femurs use 0.8 x ``size``).

    Returns
    -------
    list of dict
    """
    if not (isinstance(n_per_group, (int, np.integer)) and n_per_group >= 1):
        raise ConfigError(f"n_per_group must be an integer >= 1, got {n_per_group!r}")
    _finite("size", size, 0.3, 1.5)
    wide = (-0.005, 0.12)  # a wider CS window: bone ~150 grey in 8 bits
    # per group: rows of (anatomy overrides, specimen overrides, scan overrides)
    tables: dict[str, list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]] = {
        "sham": [
            (dict(plate_shape="dome", bridged_fraction=0.03),
             dict(bubbles=3, foam_end="distal"),
             dict(voxel_um=15.0, round_roi=True, rings=4, cupping_grey=12.0)),
            (dict(plate_shape="w", plate_amplitude_mm=0.25, bridged_fraction=0.10),
             dict(soft_tissue_coverage=0.6, soft_tissue_mm=0.3, bone_offset_mm=(0.25, -0.2),
                  foam_end="proximal"),
             dict(voxel_um=13.0, tilt_deg=6.0, tilt_azimuth_deg=40.0, distal_first=False,
                  bit_depth=16, first_section=213, fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.10, primary_bv_tv=0.22, cartilage_grey=76.0,
                  epiphysis_bv_tv=0.34),
             dict(bubbles=2),
             dict(voxel_um=18.0, tilt_deg=12.0, tilt_azimuth_deg=200.0, specks=12,
                  cupping_grey=25.0, spin_deg=35.0)),
            (dict(plate_shape="dome", plate_tilt_deg=12.0, plate_tilt_azimuth_deg=90.0,
                  bridged_fraction=0.15, size_factor=0.8),
             dict(bubbles=4),
             dict(voxel_um=10.0, tilt_deg=4.5, tilt_azimuth_deg=300.0, distal_first=False,
                  round_roi=True, index_length=8, fov_margin_mm=-0.3)),
        ],
        "OVX": [
            (dict(plate_shape="w", plate_amplitude_mm=0.2, bridged_fraction=0.05),
             dict(bubbles=6, bubble_radius_mm=(0.05, 0.25)),
             dict(voxel_um=20.0, tilt_deg=3.0, tilt_azimuth_deg=120.0, bit_depth=16,
                  rings=3, first_section=88)),
            (dict(plate_thickness_mm=0.06, bridged_fraction=0.60, bridge_size_mm=0.1,
                  plate_amplitude_mm=0.1),
             dict(soft_tissue_coverage=0.5, soft_tissue_mm=0.25),
             dict(voxel_um=15.0, tilt_deg=9.0, tilt_azimuth_deg=10.0, distal_first=False,
                  spin_deg=120.0, fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.09, primary_bv_tv=0.25, cartilage_grey=74.0,
                  size_factor=0.8),
             dict(foam_end="distal"),
             dict(voxel_um=9.0, round_roi=True, rings=6, ring_amplitude=10.0,
                  noise_sd=9.0, fov_margin_mm=-0.3)),
            (dict(plate_shape="dome", plate_amplitude_mm=0.3, bridged_fraction=0.08,
                  bv_tv=0.05),
             dict(bubbles=3, foam_end="distal"),
             dict(voxel_um=14.0, tilt_deg=7.5, tilt_azimuth_deg=250.0, bit_depth=16,
                  cs_window=wide, distal_margin_mm=0.0, fov_margin_mm=-0.3)),
        ],
        "OVX+Exos": [
            (dict(plate_shape="w", plate_tilt_deg=8.0, plate_tilt_azimuth_deg=0.0,
                  bridged_fraction=0.06),
             dict(soft_tissue_coverage=0.7, soft_tissue_mm=0.35),
             dict(voxel_um=16.0, tilt_deg=12.0, tilt_azimuth_deg=90.0, distal_first=False,
                  bit_depth=16, spin_deg=250.0, fov_margin_mm=-0.2)),
            (dict(plate_shape="dome", plate_amplitude_mm=0.3, bridged_fraction=0.0),
             dict(bubbles=5, foam_end="proximal"),
             dict(voxel_um=12.0, tilt_deg=2.0, tilt_azimuth_deg=330.0, specks=20,
                  fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.08, primary_bv_tv=0.28, plate_shape="flat",
                  bridged_fraction=0.12),
             dict(bubbles=2),
             dict(voxel_um=20.0, tilt_deg=5.0, tilt_azimuth_deg=160.0, cupping_grey=20.0,
                  fov_margin_mm=-0.3, round_roi=True)),
            (dict(plate_shape="w", plate_amplitude_mm=0.15, bridged_fraction=0.04),
             dict(bone_offset_mm=(-0.3, 0.3), bubbles=2),
             dict(voxel_um=16.0, tilt_deg=10.0, tilt_azimuth_deg=45.0, distal_first=False,
                  cs_window=wide, tube_offset_mm=(-0.2, 0.1), first_section=400,
                  fov_margin_mm=-0.25)),
        ],
    }
    out: list[dict[str, Any]] = []
    i = 0
    groups = [("sham", k) for k in range(n_per_group)] + \
        [("OVX", k) for k in range(n_per_group)] + \
        [("OVX+Exos", k) for k in range(n_per_group)] + [("adult", 0)]
    for group, k in groups:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, i]))
        femur_seed = int(np.random.SeedSequence([int(seed), 8, i]).generate_state(1)[0])
        if group == "adult":
            a_over: dict[str, Any] = dict(group="sham", plate_present=False, bv_tv=0.18)
            s_over: dict[str, Any] = dict(bubbles=2, soft_tissue_coverage=0.4)
            c_over: dict[str, Any] = dict(voxel_um=15.0, tilt_deg=6.0,
                                          tilt_azimuth_deg=150.0)
        else:
            a_over, s_over, c_over = (dict(d) for d in tables[group][k % 4])
            a_over["group"] = group
            base = GROUP_DESIGNS[group].bv_tv
            a_over.setdefault("bv_tv", round(base * float(np.clip(
                1 + 0.1 * rng.standard_normal(), 0.8, 1.2)), 4))
        factor = a_over.pop("size_factor", 1.0)
        a_over.setdefault("plate_level_mm", round(float(rng.uniform(1.85, 2.15)), 3))
        a_over.setdefault("plate_amplitude_mm", round(float(rng.uniform(0.08, 0.2)), 3))
        a_over.setdefault("plate_thickness_mm", round(float(rng.uniform(0.12, 0.2)), 3))
        a_over.setdefault("plate_tilt_deg", round(float(rng.uniform(0.0, 4.0)), 2))
        a_over.setdefault("plate_tilt_azimuth_deg", round(float(rng.uniform(0, 360)), 1))
        a_over["size"] = round(size * factor, 4)
        c_over.setdefault("spin_deg", round(float(rng.uniform(0, 360)), 1))
        c_over.setdefault("noise_sd", round(float(rng.uniform(5.0, 9.0)), 2))
        c_over.setdefault("cupping_grey", round(float(rng.uniform(5.0, 15.0)), 2))
        c_over.setdefault("first_section", int(rng.integers(0, 600)))
        if a_over.get("plate_present", True):  # drawn last: the draws above stay as they were
            a_over.setdefault("ring_open_fraction", round(float(rng.uniform(0.5, 1.0)), 2))
        name = f"{_FOLDERS[group]}_{k + 1:02d}"
        out.append({
            "scan": name,
            "group": group,
            "seed": femur_seed,
            "anatomy": Anatomy(**a_over),
            "specimen": Specimen(**s_over),
            "scan_settings": ScanSettings(**c_over),
        })
        i += 1
    return out


def _make_and_write(out: Path, d: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    fem = make_realistic_femur(d["anatomy"], d["specimen"], d["scan_settings"], seed=d["seed"])
    t_gen = time.perf_counter() - t0
    replace_folder_atomic(out, d["scan"], lambda folder: fem.write_nrecon(folder))
    morph = fem.truth_morphometry()
    rec = {"scan": d["scan"], "group": d["group"], **fem.truth_record()}
    rec["truth_morphometry"] = _jsonable(morph)
    for key in ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N"):
        rec[key] = _jsonable(morph.get(key))
    rec["generation_seconds"] = round(t_gen, 2)
    logger.info("wrote %s (%s, %s voxels, ref %s) in %.1f s", d["scan"], d["group"],
                "x".join(str(v) for v in fem.labels.shape), rec["ref_slice"],
                time.perf_counter() - t0)
    return rec


def make_realistic_study(
    directory: str | os.PathLike[str],
    *,
    seed: int = 2026,
    n_per_group: int = 4,
    size: float = 0.5,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Write the hard realistic study: NRecon folders, ``groups.csv`` and ``truth.json``.

    ``3 x n_per_group`` femurs (sham, OVX, OVX+Exos; see :func:`realistic_study_design` for
    their departures) plus one adult femur without a growth plate (group ``adult``; a correct
    finder refuses it). Each scan is written into a temporary folder beside its target and
    renamed into place; ``groups.csv`` and ``truth.json`` are written atomically last. Same
    seed, same bytes (whatever ``jobs``).

    Parameters
    ----------
    directory : str or path
        Study folder (created).
    seed : int
        Study seed.
    n_per_group : int
        Femurs per group (4 covers every departure).
    size : float
        Macro-anatomy scale (1 = a real adult rat; 0.5 keeps the study small).
    jobs : int, optional
        Parallel workers (threads; default up to 2); 1 runs in this thread.

    Returns
    -------
    dict
        The content of ``truth.json``: ``generator``, ``study_seed``, ``units``,
        ``definitions``, ``reference_cs_window``, ``grey_levels``, ``labels`` and ``scans``
        (one record per femur: every parameter, reference, axis, VOI section range, truth
        BV/TV (%), Tb.Th, Tb.Sp (mm) and ``departures``).
    """
    out = Path(directory)
    n_jobs = min(2, os.cpu_count() or 1) if jobs is None else int(jobs)
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs!r}")
    designs = realistic_study_design(seed=seed, n_per_group=n_per_group, size=size)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if n_jobs == 1:
        records = [_make_and_write(out, d) for d in designs]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            records = list(pool.map(lambda d: _make_and_write(out, d), designs))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scan", "group"])
    writer.writerows([r["scan"], r["group"]] for r in records)
    atomic_write_text(out / "groups.csv", buf.getvalue())
    for r in records:
        r.pop("generation_seconds", None)  # wall-clock time is not part of the bytes
    truth = {
        "generator": "ctmorph.phantoms.realistic.make_realistic_study",
        "study_seed": int(seed),
        "n_per_group": int(n_per_group),
        "size": float(size),
        "units": {"ref_slice": "section number", "voi_first_slice": "section number",
                  "voi_last_slice": "section number", "BV/TV": "%", "Tb.Th": "mm",
                  "Tb.Sp": "mm", "Tb.N": "1/mm", "voxel_um": "µm",
                  "axis_mm": "mm along the bone axis from the axis point in slice 0's plane",
                  "anatomical_mm": "mm proximal of the condyles' distal-most level",
                  "cs_window": "NRecon CS units", "grey": "8-bit grey, reference window"},
        "definitions": {
            "sections": "planes perpendicular to the bone axis, one voxel apart; voxel p is in "
                        "section round(((p - axis_point) . axis_direction) / voxel)",
            "reference": "one more than the largest section holding growth-plate cartilage; "
                         "ref_slice = first_section + the slice index where the axis crosses "
                         "it; null without cartilage (adult)",
            "voi": "endocortical labels in sections reference + round(1.0 mm / voxel) .. + "
                   "round(2.0 mm / voxel) - 1",
            "BV/TV, Tb.Th, Tb.Sp": "ctmorph.morphometry.trabecular_morphometry of the truth "
                                   "bone in the truth VOI (endocortical marrow space, 0.3 mm "
                                   "context)",
        },
        "reference_cs_window": list(REFERENCE_CS_WINDOW),
        "grey_levels": dict(zip(LABELS, GREY_LEVELS, strict=True)),
        "labels": LABELS,
        "scans": records,
    }
    atomic_write_text(out / "truth.json",
                      json.dumps(_jsonable(truth), indent=2, ensure_ascii=False) + "\n")
    logger.info("realistic study: %d femurs in %s (%.1f s)", len(records), out,
                time.perf_counter() - t0)
    return truth
