"""The parameters of a realistic femur: labels and grey levels, the trabecular design of each
group, and the anatomy, specimen and scan settings (all sizes in mm)."""


from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import ConfigError
from ..rods import cs_window_for_levels

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
AIR, BUBBLE, FOAM, TUBE, FLUID, SOFT, ARTIC, MARROW, CART, TRAB, PRIM, EPI, \
    BRIDGE, CORT, RING = range(15)
OUTSIDE = 255  # internal: not bone, bone tissue or attached tissue (the specimen fills it)

#: Labels that are bone.
BONE_LABELS: tuple[int, ...] = (TRAB, PRIM, EPI, BRIDGE, CORT)
#: Labels of the endocortical region (the marrow side of the cortex).
ENDOCORTICAL_LABELS: tuple[int, ...] = (MARROW, CART, TRAB, PRIM, EPI, BRIDGE)

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
SHAFT_BA = (1.40, 1.625)
META_BA = (1.85, 2.35)
CONDYLE_C, CONDYLE_R = (1.05, -0.55, 1.40), (1.05, 1.40, 1.20)
TROCHLEA_C, TROCHLEA_R = (1.40, 0.75, 0.0), (1.05, 1.20, 1.90)
NOTCH_C, NOTCH_R = (0.20, -1.35, 0.0), (1.40, 1.00, 0.42)
GROOVE_Y, GROOVE_R = 2.25, 0.60
BLEND, CUT_BLEND, CAP_BLEND = 0.25, 0.08, 0.20
CAP_BELOW_PLATE = 0.60  # the shaft column ends this far distal of the plate level
CORTEX_START, CORTEX_LENGTH = 0.5, 4.5  # thickening: from plate + 0.5 mm over 4.5 mm
# Absolute (not scaled) microstructure constants, mm.
EPI_PLATE_MM = 0.03  # epiphyseal bone plate on the distal face of the cartilage
EPI_PLATE_HOLES = 0.30  # fraction of it perforated
SCAR_MM = 0.04  # adult growth-plate scar
EPI_CELL_MM = 0.06  # epiphyseal trabecular field sigma
PRIMARY_SIGMA = (0.06, 0.025)  # primary spongiosa field sigma (along the plate normal, across)
RASTER_MM = 0.005  # plate rasters (mid-surface, thickness, bridges)
RIPPLE_SIGMA_MM = 0.15
THICKNESS_VARIATION = 0.08
SECONDARY_END_MM = 5.0  # no secondary spongiosa beyond this distance from the plate
VOI_DESIGN = (1.0, 2.0)  # design VOI (offset, height) of the BV/TV calibration
PROB = np.linspace(0.0, 0.95, 1901)


def finite(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
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
    return (finite(name, value[0]), finite(name, value[1]))


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
        finite("size", self.size, 0.3, 1.5)
        for name, lo, hi in (("bv_tv", 0.02, 0.5), ("cell_mm", 0.06, 0.4),
                             ("perforated", 0.0, 0.7), ("epiphysis_bv_tv", 0.1, 0.6)):
            if getattr(self, name) is not None:
                finite(name, getattr(self, name), lo, hi)
        for name, lo, hi in (
            ("anisotropy", 1.0, 3.0), ("plate_thickness_mm", 0.04, 0.3),
            ("plate_amplitude_mm", 0.0, 0.4), ("plate_ripple_mm", 0.0, 0.08),
            ("plate_tilt_deg", 0.0, 20.0), ("bridged_fraction", 0.0, 0.95),
            ("bridge_size_mm", 0.02, 0.3), ("plate_level_mm", 1.5, 2.5),
            ("primary_bv_tv", 0.0, 0.7), ("primary_mm", 0.05, 0.6), ("shell_mm", 0.04, 0.25),
            ("diaphysis_cortex_mm", 0.2, 0.9), ("flare_mm", 1.0, 4.0),
            ("cartilage_grey", 60.0, 120.0), ("ring_open_fraction", 0.0, 1.0),
        ):
            finite(name, getattr(self, name), lo, hi)
        finite("plate_tilt_azimuth_deg", self.plate_tilt_azimuth_deg)

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
            finite(name, getattr(self, name), lo, hi)
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
            finite("foam_mm", self.foam_mm, 0.05, 2.0)
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
            finite(name, getattr(self, name), lo, hi)
        finite("tilt_azimuth_deg", self.tilt_azimuth_deg)
        finite("spin_deg", self.spin_deg)
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
