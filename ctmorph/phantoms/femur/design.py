"""The parameters of a sample femur: tissue labels and their grey levels, the trabecular design
of each group, the anatomy constants (mm), the checked parameters of one femur
(:class:`FemurSpec`) and its random streams (:class:`RandomStreams`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError

__all__ = [
    "LABELS",
    "AIR",
    "SOFT",
    "MARROW",
    "CART",
    "TRAB",
    "CORT",
    "GREY",
    "GroupDesign",
    "GROUPS",
    "TIP_MM",
    "CAP_MM",
    "EPI_SHELL_MM",
    "RING_MM",
    "CORTEX_MM",
    "EPI_PLATE_MM",
    "PRIMARY_MM",
    "PRIMARY_BV_TV",
    "SIGMA_G_MM",
    "SIGMA_E_MM",
    "SIGMA_P_MM",
    "SIGMA_WAVE_MM",
    "VOI_OFFSET_MM",
    "VOI_HEIGHT_MM",
    "FemurSpec",
    "RandomStreams",
]

#: Tissue labels of :attr:`~ctmorph.phantoms.femur.FemurPhantom.labels`.
LABELS: dict[str, int] = {
    "air": 0,
    "soft_tissue": 1,
    "marrow": 2,
    "cartilage": 3,
    "trabecular": 4,
    "cortical": 5,
}
AIR, SOFT, MARROW, CART, TRAB, CORT = range(6)
#: 8-bit grey level of each label before blur and noise (NRecon 8-bit export of a rat femur).
GREY = np.array([10.0, 60.0, 64.0, 68.0, 200.0, 215.0], dtype=np.float32)


@dataclass(frozen=True)
class GroupDesign:
    """Trabecular design of one group.

    Attributes
    ----------
    bv_tv : float
        Mean BV/TV (fraction) of the secondary spongiosa in the truth VOI.
    cell_mm : float
        Filter sigma (mm) of the sheet field: sheets about 4.4 ``cell_mm`` apart on a line.
    perforated : float
        Fraction of the sheets removed by perforations (perforation weight 0).
    epiphysis_bv_tv : float
        BV/TV (fraction) of the epiphyseal trabecular bone.
    folder : str
        Folder-safe name stem.
    """

    bv_tv: float
    cell_mm: float
    perforated: float
    epiphysis_bv_tv: float
    folder: str


#: Group designs; keys are the group labels used in ``groups.csv``. Lower BV/TV comes mostly
#: from fewer, perforated trabeculae (lower Tb.N, higher Tb.Sp) and a little from thinner ones.
GROUPS: dict[str, GroupDesign] = {
    "sham": GroupDesign(0.30, cell_mm=0.115, perforated=0.05, epiphysis_bv_tv=0.40,
                        folder="sham"),
    "OVX+Exos": GroupDesign(0.18, cell_mm=0.15, perforated=0.15, epiphysis_bv_tv=0.36,
                            folder="OVXExos"),
    "OVX": GroupDesign(0.10, cell_mm=0.20, perforated=0.30, epiphysis_bv_tv=0.33,
                       folder="OVX"),
}

# Geometry constants (mm unless stated).
TIP_MM = 0.02  # soft tissue before the condyles start
CAP_MM = 0.20  # rounding of the condyle ends
EPI_SHELL_MM = 0.045  # epiphyseal shell and end cap
RING_MM = 0.04  # perichondrial bony ring at the growth plate
CORTEX_MM = (0.05, 0.14, 0.6)  # metaphyseal cortex: at the plate, far value, e-folding length
EPI_PLATE_MM = 0.025  # epiphyseal bone plate on the distal face of the cartilage
PRIMARY_MM = 0.30  # primary spongiosa fades to nothing over this distance
PRIMARY_BV_TV = 0.50  # primary spongiosa density at the chondro-osseous junction
SIGMA_G_MM = 0.06  # perforation field
SIGMA_E_MM = 0.09  # epiphyseal trabecular field (same in every group)
SIGMA_P_MM = (0.045, 0.016)  # primary spongiosa field (z, in-plane): longitudinal columns
SIGMA_WAVE_MM = 0.12  # growth-plate surface undulation
VOI_OFFSET_MM, VOI_HEIGHT_MM = 1.0, 2.0


@dataclass(frozen=True)
class FemurSpec:
    """The parameters of one sample femur, as passed to
    :func:`~ctmorph.phantoms.femur.make_femur` (which documents each of them; lengths in mm,
    the voxel size in µm, angles in degrees, grey values in 8-bit units), and the quantities
    derived from them. :meth:`check` raises :class:`~ctmorph.errors.ConfigError` for a
    parameter out of range.
    """

    group: str
    seed: int
    voxel_um: float
    shape_yx: tuple[int, int]
    length_mm: float
    distal_first: bool
    plate_unevenness_mm: float
    plate_thickness_mm: float
    plate_tilt_deg: float
    epiphysis_mm: float
    bv_tv: float | None
    bone_width_mm: float | None
    blur_vox: float
    noise_sd: float
    axis_tilt_deg: float
    axis_azimuth_deg: float
    center_offset_mm: tuple[float, float]
    plate_bridged_fraction: float
    specks: int
    rings: int
    ring_amplitude: float
    round_roi: bool
    bit_depth: int
    voi_offset_mm: float
    voi_height_mm: float

    @property
    def design(self) -> GroupDesign:
        """The design of :attr:`group`."""
        return GROUPS[self.group]

    @property
    def target(self) -> float:
        """Metaphyseal BV/TV target (fraction) in the design VOI: the group's or ``bv_tv``."""
        return self.design.bv_tv if self.bv_tv is None else float(self.bv_tv)

    @property
    def vox(self) -> float:
        """Voxel size in mm."""
        return self.voxel_um / 1000.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(Z, Y, X)`` in voxels (``Z = round(length_mm / vox)``)."""
        ny, nx = (int(s) for s in self.shape_yx)
        return int(round(self.length_mm / self.vox)), ny, nx

    @property
    def plate_mid(self) -> float:
        """Mean distance (mm) of the growth plate's mid-surface from the distal end."""
        return TIP_MM + self.epiphysis_mm + self.plate_thickness_mm / 2.0

    @property
    def shift_yx(self) -> tuple[float, float]:
        """Shift ``(y, x)`` in mm of the bone axis from the image centre."""
        shift_y, shift_x = (float(v) for v in self.center_offset_mm)
        return shift_y, shift_x

    def check(self) -> None:
        """Raise :class:`~ctmorph.errors.ConfigError` for a parameter out of range (the first
        one found, in the order of :func:`~ctmorph.phantoms.femur.make_femur`'s signature)."""
        if self.group not in GROUPS:
            raise ConfigError(f"group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if not 0.02 <= self.target <= 0.6:
            raise ConfigError(f"bv_tv must be within 0.02..0.6 (fraction), got {self.bv_tv!r}")
        if not (math.isfinite(self.voxel_um) and self.voxel_um > 0):
            raise ConfigError(f"voxel_um must be positive (µm), got {self.voxel_um!r}")
        ny, nx = (int(s) for s in self.shape_yx)
        if ny < 32 or nx < 32:
            raise ConfigError(f"shape_yx must be at least 32 x 32 pixels, got {self.shape_yx!r}")
        if self.plate_unevenness_mm < 0 or self.plate_thickness_mm <= 0 \
                or self.epiphysis_mm <= CAP_MM:
            raise ConfigError(
                "plate_unevenness_mm must be >= 0, plate_thickness_mm > 0 and epiphysis_mm > "
                f"{CAP_MM} mm"
            )
        self._check_departures()
        nz = self.shape[0]
        if nz * self.vox < self.plate_mid + self.plate_thickness_mm + 0.2:
            raise ConfigError(f"length_mm={self.length_mm} is too short to hold the growth plate")

    def _check_departures(self) -> None:
        tilt_deg, offset = self.axis_tilt_deg, self.center_offset_mm
        if not (math.isfinite(tilt_deg) and 0 <= abs(tilt_deg) <= 15):
            raise ConfigError(f"axis_tilt_deg must be within -15..15 degrees, got {tilt_deg!r}")
        if len(offset) != 2 or not all(math.isfinite(float(v)) for v in offset):
            raise ConfigError(f"center_offset_mm must be two finite numbers (mm), got {offset!r}")
        if not 0 <= self.plate_bridged_fraction <= 0.5:
            raise ConfigError(
                f"plate_bridged_fraction must be within 0..0.5, got {self.plate_bridged_fraction!r}"
            )
        if self.specks < 0 or self.rings < 0 or not self.ring_amplitude >= 0:
            raise ConfigError(
                f"specks, rings and ring_amplitude must be >= 0, got {self.specks!r}, "
                f"{self.rings!r}, {self.ring_amplitude!r}"
            )
        if self.bit_depth not in (8, 16):
            raise ConfigError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if not (self.voi_offset_mm >= 0 and self.voi_height_mm > 0):
            raise ConfigError(
                f"voi_offset_mm must be >= 0 and voi_height_mm > 0 (mm), got "
                f"{self.voi_offset_mm!r}, {self.voi_height_mm!r}"
            )


@dataclass(frozen=True, eq=False)
class RandomStreams:
    """The independent random streams of one femur, all from its ``seed``.

    Attributes
    ----------
    sheets, perforation, primary, wave, geometry, noise, calibration, epiphysis : Generator
        The eight children of ``SeedSequence(seed)``, in spawn order: secondary-spongiosa
        sheet field, perforation field, primary-spongiosa field, growth-plate undulation,
        cross-section (cortex variation), grey-value noise, calibration samples, epiphyseal
        sheet field.
    departures : Generator
        Bridges, rings and specks: a stream of its own (``SeedSequence([seed, 0x6465])``), so
        a femur without departures is the same as before they existed.
    """

    sheets: np.random.Generator
    perforation: np.random.Generator
    primary: np.random.Generator
    wave: np.random.Generator
    geometry: np.random.Generator
    noise: np.random.Generator
    calibration: np.random.Generator
    epiphysis: np.random.Generator
    departures: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        """The streams of a femur with this ``seed``."""
        children = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]
        departures = np.random.default_rng(np.random.SeedSequence([seed, 0x6465]))
        return cls(*children, departures=departures)
