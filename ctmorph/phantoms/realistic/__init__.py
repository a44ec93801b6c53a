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

from .design import (
    BONE_LABELS,
    ENDOCORTICAL_LABELS,
    GREY_LEVELS,
    GROUP_DESIGNS,
    LABELS,
    REFERENCE_CS_WINDOW,
    Anatomy,
    ScanSettings,
    Specimen,
    TrabecularDesign,
)
from .model import (
    FemurModel,
)
from .scan import (
    make_realistic_femur,
)
from .study import (
    make_realistic_study,
    realistic_study_design,
)
from .truth import (
    RealisticFemur,
    ReferenceTruth,
    TruthVoi,
)

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
