"""The column registry: name, unit and definition of every number ctmorph writes.

It feeds ``columns.csv``, the report's tables and axis labels, so units never drift.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Column", "COLUMNS", "COLUMN_BY_NAME", "MORPHOMETRY_PARAMETERS", "order_columns"]

HILDEBRAND_1997 = "Hildebrand T, Rüegsegger P (1997) J Microsc 185:67-75"
HILDEBRAND_1999 = "Hildebrand T et al. (1999) J Bone Miner Res 14:1167-1174"
BOUXSEIN_2010 = "Bouxsein ML et al. (2010) J Bone Miner Res 25:1468-1486"
LORENSEN_1987 = "Lorensen WE, Cline HE (1987) Comput Graph 21:163-169"


@dataclass(frozen=True)
class Column:
    """One output column: its exact name, unit, one-line definition and reference."""

    name: str
    unit: str
    description: str
    reference: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("scan", "", "scan folder name"),
    Column("group", "", "study group label (from --groups/--group)"),
    Column("threshold_change_pct", "%", "sensitivity.csv: change of the global threshold from the main run's (-P, 0, +P for --sensitivity P)"),
    Column("threshold_unit", "", "sensitivity.csv: what the percentage applied to: the threshold in grey, attenuation or g/cm³ HA"),
    Column("status", "", "'ok' or 'failed'"),
    Column("error", "", "why the scan failed (empty when ok)"),
    Column("qc_flags", "", "'; '-separated flags of implausible results (auto ROI: BV/TV, Tb.Th, Tb.Sp outside the rat metaphysis range, Tb.N·Tb.Th inconsistent with BV/TV, growth plate at the distal end of the scan, VOI much shorter than requested; any ROI: calibration mismatch); empty: none. See ctmorph.qc.qc_flags"),
    Column("voxel_um", "µm", "isotropic voxel size, from the reconstruction log ([Reconstruction] Pixel Size)"),
    Column("threshold", "grey", "the study's global bone threshold as a grey value of this scan, applied to the Gaussian-smoothed grey values (bone: grey > threshold); scans with different CS windows or bit depths have different grey thresholds for one attenuation"),
    Column("threshold_attenuation", "NRecon CS units", "the study's global bone threshold in attenuation, the unit of the log's 'Minimum/Maximum for CS to Image Conversion' window (empty when the scan's log gives no window)"),
    Column("threshold_method", "", "'otsu (pooled over N scans)' (', on a common attenuation axis' when the scans' CS windows or bit depths differ), 'fixed', 'fixed attenuation' or the density threshold"),
    Column("threshold_density", "g/cm³ HA", "the global threshold in density units through this scan's CS window (calibrated runs)"),
    Column("calibration_mismatch", "", "reconstruction settings that differ from the calibration phantoms' (empty: none)"),
    Column("roi", "", "VOI mode: auto (growth-plate referenced endocortical VOI), full (every voxel with data), envelope (inside the specimen's outer surface: 3-D closing of bone by a 0.75 mm ball, holes filled) or mask (user-drawn)"),
    Column("roi_mask", "", "the VOI mask file (--roi mask)"),
    Column("distal_end", "", "which end of the stack is distal: first (lowest section) or last"),
    Column("voi_source", "", "how the auto-ROI VOI was placed: auto (the growth-plate finder), manual ref (a reference section given by hand: --ref-slice, --overrides, manifest) or manual VOI (first and last section given by hand)"),
    Column("plate_confidence", "0-1", "how sure the growth-plate finder is (auto VOI): the product of the contrast of the cartilage sheet against the bone on both sides, its uniqueness (no rival sheet), its continuity across the marrow cavity, its openness (few bony bridges) and the agreement of the estimates of its proximal edge, halved near the scan end or at an implausible thickness; the causes of doubt are named in qc_flags. See ctmorph.segment.femur.plate.find_plate"),
    Column("ref_slice", "section no.", "growth-plate reference: first section proximal of the growth plate holding no growth-plate cartilage (auto ROI only)"),
    Column("axis_tilt_deg", "°", "angle between the femur's long axis (robust line through the periosteal-envelope centroids of the shaft) and the slice normal (auto ROI only)"),
    Column("axis_aligned", "", "True when the scan was analysed resampled in slices perpendicular to the bone axis (tilt >= 3°; section numbers are then where the axis crosses each slice)"),
    Column("voi_first_slice", "section no.", "lowest section number in the VOI, numbered as the slice files are"),
    Column("voi_last_slice", "section no.", "highest section number in the VOI, numbered as the slice files are"),
    Column("voi_offset_mm", "mm", "VOI start proximal of the reference slice"),
    Column("voi_height_mm", "mm", "VOI length along the stack"),
    Column("plate_end_distance_mm", "mm", "auto ROI: distance from the growth plate's distal-most cartilage slice to the distal end of the scan (small: the scan may cut the plate)"),
    Column("voi_offset_frac", "", "VOI start proximal of the reference slice as a fraction of bone_length_mm (--roi-offset-frac)"),
    Column("voi_height_frac", "", "VOI length as a fraction of bone_length_mm (--roi-height-frac)"),
    Column("bone_length_mm", "mm", "length of the whole bone along the stack: slices from the first to the last with a bone cross-section (VOIs given as fractions of bone length)"),
    Column("TV", "mm³", "tissue volume: VOI voxel count × voxel volume", BOUXSEIN_2010),
    Column("BV", "mm³", "bone volume: bone voxels in the VOI × voxel volume", BOUXSEIN_2010),
    Column("BV/TV", "%", "bone volume fraction by voxel counting", BOUXSEIN_2010),
    Column("BS", "mm²", "bone surface: marching-cubes area of the bone/marrow interface inside the VOI; the VOI wall and the image border are not surfaces", LORENSEN_1987),
    Column("BS/BV", "1/mm", "bone surface to bone volume ratio", BOUXSEIN_2010),
    Column("BS/TV", "1/mm", "bone surface density", BOUXSEIN_2010),
    Column("Tb.Th", "mm", "trabecular thickness: volume-weighted mean local thickness (largest-sphere diameter) of bone in the VOI", HILDEBRAND_1997),
    Column("Tb.Th.SD", "mm", "standard deviation of local bone thickness over bone voxels in the VOI", HILDEBRAND_1997),
    Column("Tb.Th.Max", "mm", "largest local bone thickness in the VOI", HILDEBRAND_1997),
    Column("Tb.Sp", "mm", "trabecular separation: volume-weighted mean local thickness of marrow in the VOI (marrow bounded by bone and the endocortical surface)", HILDEBRAND_1997),
    Column("Tb.Sp.SD", "mm", "standard deviation of local marrow thickness over marrow voxels in the VOI", HILDEBRAND_1997),
    Column("Tb.Sp.Max", "mm", "largest local marrow thickness in the VOI", HILDEBRAND_1997),
    Column("Tb.N", "1/mm", "trabecular number, direct: 1 / mean distance between the mid-axes (skeleton) of the bone", HILDEBRAND_1999),
    Column("Tb.N.model", "1/mm", "trabecular number, plate model: (BV/TV) / Tb.Th, as quoted by CTAn users", "Parfitt AM et al. (1987) J Bone Miner Res 2:595-610"),
    Column("Tb.Pf", "1/mm", "trabecular pattern factor (BS1 - BS2)/(BV1 - BV2) after a one-voxel 6-neighbourhood dilation; surfaces by marching cubes and volumes by voxels in the VOI (convex > 0, concave < 0)", "Hahn M et al. (1992) Bone 13:327-330"),
    Column("Conn", "", "connectivity 1 - χ of the bone after Odgaard-Gundersen edge correction", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182"),
    Column("Conn.D", "1/mm³", "connectivity density (1 - χ) / TV, 26-connected bone, edge corrected", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182"),
    Column("Euler", "", "Euler characteristic χ of the bone in the VOI (26-connected bone, 6-connected marrow), uncorrected"),
    Column("Euler.corrected", "", "Euler characteristic after the Odgaard-Gundersen edge correction (the VOI's share of the structure's χ)", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182"),
    Column("SMI", "", "structure model index 6·BV·(dBS/dr)/BS² (plate 0, rod 3, sphere 4), exact derivative of the marching-cubes area under a normal offset", HILDEBRAND_1997),
    Column("SMI+", "", "SMI contribution of the convex part of the surface", "Salmon PL et al. (2015) Front Endocrinol 6:162"),
    Column("SMI-", "", "SMI contribution of the concave part of the surface (negative)", "Salmon PL et al. (2015) Front Endocrinol 6:162"),
    Column("SMI.concave_fraction", "", "fraction of bone surface area that is concave, where SMI is unreliable", "Salmon PL et al. (2015) Front Endocrinol 6:162"),
    Column("DA", "", "degree of anisotropy 1 - μmin/μmax of the fitted MIL fabric tensor M (1/MIL² = ωᵀMω), fixed Fibonacci direction set (= 1 - (MILmin/MILmax)², as BoneJ)", "Harrigan TP, Mann RW (1984) J Mater Sci 19:761-767"),
    Column("MIL.min", "mm", "smallest principal mean intercept length"),
    Column("MIL.mid", "mm", "middle principal mean intercept length"),
    Column("MIL.max", "mm", "largest principal mean intercept length"),
    Column("MIL.dir.z", "", "z component of the main direction (largest MIL) of the fabric"),
    Column("MIL.dir.y", "", "y component of the main direction (largest MIL) of the fabric"),
    Column("MIL.dir.x", "", "x component of the main direction (largest MIL) of the fabric"),
    Column("ct_first_slice", "section no.", "lowest section number of the cortical (diaphyseal) VOI"),
    Column("ct_last_slice", "section no.", "highest section number of the cortical (diaphyseal) VOI"),
    Column("Tt.Ar", "mm²", "total cross-sectional area inside the periosteal envelope, mean over slices", BOUXSEIN_2010),
    Column("Ct.Ar", "mm²", "cortical bone area, mean over slices", BOUXSEIN_2010),
    Column("Ma.Ar", "mm²", "marrow area: Tt.Ar - Ct.Ar (includes intracortical pores)", BOUXSEIN_2010),
    Column("Ct.Ar/Tt.Ar", "%", "cortical area fraction", BOUXSEIN_2010),
    Column("Ct.Th", "mm", "cortical thickness: volume-weighted mean 3-D local thickness of the cortex", HILDEBRAND_1997),
    Column("Ct.Th.SD", "mm", "SD of the local thickness of the cortex", HILDEBRAND_1997),
    Column("Ct.Po", "%", "cortical porosity: non-bone volume between the periosteal and endosteal surfaces / (that + cortical bone volume)", BOUXSEIN_2010),
    Column("J", "mm⁴", "polar moment of inertia of the cortical bone about its centroid, mean over slices", BOUXSEIN_2010),
    Column("Imax", "mm⁴", "maximum principal second moment of area of the cortical bone, mean over slices", BOUXSEIN_2010),
    Column("Imin", "mm⁴", "minimum principal second moment of area of the cortical bone, mean over slices", BOUXSEIN_2010),
    Column("Ct.TMD", "g/cm³ HA", "mean calibrated density of cortical bone (surface layer eroded as for TMD)", BOUXSEIN_2010),
    Column("BMD", "g/cm³ HA", "mean calibrated density of the VOI (bone and marrow)", BOUXSEIN_2010),
    Column("TMD", "g/cm³ HA", "mean calibrated density of bone voxels only", BOUXSEIN_2010),
    Column("smooth_sigma_vox", "voxel", "Gaussian smoothing sigma before thresholding"),
    Column("thickness_convention", "", "local-thickness convention: corrected (half a voxel subtracted) or uncorrected (centre-to-centre)"),
    Column("n_slices", "", "slices in the scan"),
    Column("input_hash", "", "sha256 of the log and every slice file"),
    Column("config_hash", "", "hash of the analysis settings"),
    Column("ctmorph_version", "", "software version that produced the row"),
)

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}

#: The morphometric parameters summarised per group by the report, in display order.
MORPHOMETRY_PARAMETERS: tuple[str, ...] = (
    "BMD", "TMD", "BV/TV", "Tb.Th", "Tb.N", "Tb.Sp", "BS/BV", "BS/TV", "Tb.N.model",
    "Conn.D", "SMI", "DA", "TV", "BV", "BS", "Tb.Th.SD", "Tb.Sp.SD",
)


def order_columns(names: list[str]) -> list[str]:
    """Registry order first, then any unregistered names in their given order."""
    known = [c.name for c in COLUMNS if c.name in names]
    return known + [n for n in names if n not in COLUMN_BY_NAME]
