"""Synthetic rat distal femur with per-voxel truth.

:func:`make_femur` builds one distal femur as a Bruker SkyScan 1172 / NRecon 8-bit
reconstruction would show it, with the truth every test needs: a tissue label per voxel, the
growth-plate reference slice and the trabecular VOI 1.0-3.0 mm proximal of it.
:func:`ctmorph.phantoms.sample_study.make_sample_study` writes nine such scans as the sample
study.

Anatomy along the long axis, from the distal end (all lengths in mm)::

    soft tissue | condyles: epiphysis (trabecular bone in a thin shell, wider than the shaft,
    intercondylar notch) | epiphyseal bone plate | growth-plate cartilage (wavy, marrow grey)
    | primary spongiosa (dense, column-like, fading over ~0.3 mm) | secondary spongiosa of the
    metaphysis (group-dependent, inside a cortical tube thickening to ~0.13 mm) | diaphysis
    (empty marrow in the tube)

The secondary spongiosa is a network of sheets around the zero surface of a smooth random
field ``f`` (Gaussian-filtered noise divided by its gradient magnitude, so ``|f|`` is about the
distance to the surface and the sheets have nearly uniform thickness): bone where
``|f| < T·w``. A finer random field gives the perforation weight ``w`` (0 in a group-dependent
fraction of the space, ramping to 1). The groups differ in cell size (OVX: fewer trabeculae,
lower Tb.N, higher Tb.Sp), perforation and, through the calibration, slightly in thickness
(Tb.Th about 0.075 mm sham, 0.06 mm OVX), as in the ovariectomised rat. ``T`` follows a design
BV/TV profile along the bone (rising behind the primary spongiosa, falling through the VOI, zero
in the diaphysis), calibrated against the empirical distribution of ``|f| / w`` inside the design
VOI, so the truth BV/TV there is the group target (30 % sham, 18 % OVX+Exos, 10 % OVX) within
about one percentage point.

Grey values are those of an 8-bit NRecon export (air 10, soft tissue 60, marrow 64, cartilage
68, trabecular bone 200, cortical bone 215), blurred by a Gaussian of ``blur_vox`` voxels
(partial volume) with additive noise of SD ``noise_sd``. The noise is drawn as windows at random
offsets into a pool of normal deviates (cheap and deterministic). The sample study writes the
femurs with the CS window under which marrow (64) means 0 and trabecular bone (200) 1.15 g/cm³
HA in :data:`ctmorph.phantoms.rods.DEFAULT_HA_MODEL`
(:data:`~ctmorph.phantoms.sample_study.STUDY_DENSITY`), the model of its phantom scans. All
sizes are in mm, so the femur looks the same at any voxel size; the cross-section scales with
the slice size (shaft 0.84 of the field of view) so small test femurs still fit.

Departures from the ideal scan, each with its truth (all off by default, and then the arrays
are exactly those of the ideal femur): the bone axis tilted from the slice normal (the truth
rotates with it), the bone shifted off centre or across the field-of-view edge, a partly
bridged growth plate, bright specks, ring artefacts, round-ROI zeros outside the
reconstruction circle and 16-bit output (see :func:`make_femur`).

The package, one job per module: :mod:`.design` (labels, grey levels, group designs, anatomy
constants, the checked parameters and random streams), :mod:`.geometry` (cross-section, cortex
and growth plate), :mod:`.fields` (the trabecular random fields and their calibration),
:mod:`.labels` (the label volume), :mod:`.truth` (reference, VOI, tilt and
:class:`FemurPhantom`), :mod:`.scan` (grey values) and :mod:`.build` (:func:`make_femur`, the
stages in order).
"""

from .build import make_femur
from .design import GREY, GROUPS, LABELS, MARROW, TRAB, GroupDesign
from .truth import FemurPhantom, VoiTruth

__all__ = [
    "GROUPS",
    "LABELS",
    "FemurPhantom",
    "VoiTruth",
    "GREY",
    "MARROW",
    "TRAB",
    "GroupDesign",
    "make_femur",
]
