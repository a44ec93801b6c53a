"""The column registry: name, unit, definition and pointers of every number ctmorph writes.

It is the one source of ``columns.csv``, the README's "Definitions" table
(``scripts/update_readme_columns.py``), the report's units, axis labels and methods
definitions, and the unit tables of :mod:`ctmorph.morphometry`, so units never drift. Each
entry also says where the number is computed (``code``), which test checks it against analytic
truth or an oracle (``test``) and which options of ``ctmorph analyze`` change it (``flag``):
``python -m ctmorph.columns Tb.Sp`` prints all of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Column", "COLUMNS", "COLUMN_BY_NAME", "MORPHOMETRY_PARAMETERS", "column_units",
           "definitions_table", "describe", "order_columns"]

HILDEBRAND_1997 = "Hildebrand T, Rüegsegger P (1997) J Microsc 185:67-75"
HILDEBRAND_1999 = "Hildebrand T et al. (1999) J Bone Miner Res 14:1167-1174"
BOUXSEIN_2010 = "Bouxsein ML et al. (2010) J Bone Miner Res 25:1468-1486"
LORENSEN_1987 = "Lorensen WE, Cline HE (1987) Comput Graph 21:163-169"


@dataclass(frozen=True)
class Column:
    """One output column: its exact name, unit, one-line definition and reference, and where
    to look further.

    Attributes
    ----------
    name, unit, description, reference : str
        As written to ``columns.csv`` (``unit`` empty for text and dimensionless numbers).
    code : str
        Dotted path of the public function (or method) that computes the value, e.g.
        ``"ctmorph.morphometry.trabecular_morphometry"``; for row bookkeeping the function
        that writes the row.
    test : str
        ``tests/<file>.py::<test function>`` checking the value against analytic truth or an
        oracle; several are separated by ``", "``. Empty when no test pins the value itself.
    flag : str
        The options of ``ctmorph analyze`` that choose how this column is computed or what it
        holds, separated by ``", "`` (the threshold, smoothing and VOI options change every
        measured number and are named only where they are the column's subject). Empty: none.
    """

    name: str
    unit: str
    description: str
    reference: str = ""
    code: str = ""
    test: str = ""
    flag: str = ""

    @property
    def tests(self) -> tuple[str, ...]:
        """The ``test`` pointers one by one."""
        return _split(self.test)

    @property
    def flags(self) -> tuple[str, ...]:
        """The ``flag`` options one by one."""
        return _split(self.flag)


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


COLUMNS: tuple[Column, ...] = (
    Column("scan", "", "scan folder name",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_run_integrity.py::test_a_scan_reached_through_a_link_is_named_after_the_link", flag="--manifest"),
    Column("group", "", "study group label (from --groups/--group)",
           code="ctmorph.batch.run_analysis", test="tests/test_groups_file.py::test_comments_blank_lines_extra_columns_and_line_numbers", flag="--groups, --group, --manifest"),
    Column("threshold_change_pct", "%", "sensitivity.csv: change of the global threshold from the main run's (-P, 0, +P for --sensitivity P)",
           code="ctmorph.sensitivity.run_sensitivity", test="tests/test_sensitivity.py::test_sub_runs_use_the_threshold_times_one_plus_minus_p", flag="--sensitivity"),
    Column("threshold_unit", "", "sensitivity.csv: what the percentage applied to: the threshold in grey, attenuation or g/cm³ HA",
           code="ctmorph.sensitivity.run_sensitivity", test="tests/test_sensitivity.py::test_sub_runs_use_the_threshold_times_one_plus_minus_p", flag="--sensitivity"),
    Column("status", "", "'ok' or 'failed'",
           code="ctmorph.batch.run_analysis", test="tests/test_cli_end_to_end.py::test_bad_scans_fail_alone"),
    Column("error", "", "why the scan failed (empty when ok)",
           code="ctmorph.batch.run_analysis", test="tests/test_cli_end_to_end.py::test_bad_scans_fail_alone"),
    Column("qc_flags", "", "'; '-separated flags of implausible results (auto ROI: BV/TV, Tb.Th, Tb.Sp outside the rat metaphysis range, Tb.N·Tb.Th inconsistent with BV/TV, growth plate at the distal end of the scan, VOI much shorter than requested; any ROI: calibration mismatch); empty: none. See ctmorph.qc.qc_flags",
           code="ctmorph.qc.qc_flags", test="tests/test_qc.py::test_each_flag_fires_alone"),
    Column("voxel_um", "µm", "isotropic voxel size, from the reconstruction log ([Reconstruction] Pixel Size)",
           code="ctmorph.io.read_scan", test="tests/test_io_log.py::test_skyscan1172_values_read_by_eye", flag="--voxel-size"),
    Column("threshold", "grey", "the study's global bone threshold as a grey value of this scan, applied to the Gaussian-smoothed grey values (bone: grey > threshold); scans with different CS windows or bit depths have different grey thresholds for one attenuation",
           code="ctmorph.segment.pooling.pooled_otsu", test="tests/test_threshold.py::test_otsu_matches_skimage_on_overlapping_modes, tests/test_study_threshold.py::test_different_windows_and_bit_depths_give_the_same_bone", flag="--threshold, --threshold-density, --threshold-attenuation"),
    Column("threshold_attenuation", "NRecon CS units", "the study's global bone threshold in attenuation, the unit of the log's 'Minimum/Maximum for CS to Image Conversion' window (empty when the scan's log gives no window)",
           code="ctmorph.calibration.grey_to_attenuation", test="tests/test_study_threshold.py::test_an_attenuation_threshold_is_each_scans_own_grey", flag="--threshold, --threshold-attenuation"),
    Column("threshold_method", "", "'otsu (pooled over N scans)' (', on a common attenuation axis' when the scans' CS windows or bit depths differ), 'fixed', 'fixed attenuation' or the density threshold",
           code="ctmorph.segment.pooling.pooled_otsu", test="tests/test_study_threshold.py::test_equal_scales_pool_exactly_as_grey_histograms", flag="--threshold, --threshold-density, --threshold-attenuation"),
    Column("threshold_density", "g/cm³ HA", "the global threshold in density units through this scan's CS window (calibrated runs)",
           code="ctmorph.calibration.density_to_grey", test="tests/test_calibration.py::test_density_threshold_is_one_attenuation_in_every_window", flag="--threshold-density, --calibration"),
    Column("calibration_mismatch", "", "reconstruction settings that differ from the calibration phantoms' (empty: none)",
           code="ctmorph.calibration.check_settings", test="tests/test_calibration.py::test_check_settings", flag="--calibration, --strict"),
    Column("roi", "", "VOI mode: auto (growth-plate referenced endocortical VOI), full (every voxel with data), envelope (inside the specimen's outer surface: 3-D closing of bone by a 0.75 mm ball, holes filled) or mask (user-drawn)",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_roi_modes.py::test_cli_roi_envelope_lattice_core", flag="--roi, --roi-mask"),
    Column("roi_mask", "", "the VOI mask file (--roi mask)",
           code="ctmorph.segment.voi.open_roi_mask", test="tests/test_roi_modes.py::test_mask_round_trip_multipage", flag="--roi-mask"),
    Column("distal_end", "", "which end of the stack is distal: first (lowest section) or last",
           code="ctmorph.segment.detect_distal_end", test="tests/test_voi.py::test_reference_slice_within_0_1_mm_and_distal_end", flag="--distal-end, --overrides"),
    Column("voi_source", "", "how the auto-ROI VOI was placed: auto (the growth-plate finder), manual ref (a reference section given by hand: --ref-slice, --overrides, manifest) or manual VOI (first and last section given by hand)",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_manual_voi.py::test_a_reference_by_hand_moves_the_voi_by_exactly_its_offset", flag="--ref-slice, --overrides"),
    Column("plate_confidence", "0-1", "how sure the growth-plate finder is (auto VOI): the product of the contrast of the cartilage sheet against the bone on both sides, its uniqueness (no rival sheet), its continuity across the marrow cavity, its openness (few bony bridges) and the agreement of the estimates of its proximal edge, halved near the scan end or at an implausible thickness; the causes of doubt are named in qc_flags. See ctmorph.segment.femur.plate.find_plate",
           code="ctmorph.segment.find_growth_plate", test="tests/test_plate_sheet.py::test_a_mostly_bridged_plate_is_flagged_with_low_confidence"),
    Column("ref_slice", "section no.", "growth-plate reference: first section proximal of the growth plate holding no growth-plate cartilage (auto ROI only)",
           code="ctmorph.segment.find_growth_plate", test="tests/test_voi.py::test_reference_slice_within_0_1_mm_and_distal_end, tests/test_plate_sheet.py::test_the_reference_is_the_first_slice_past_the_sheet", flag="--ref-slice, --overrides, --distal-end, --align"),
    Column("axis_tilt_deg", "°", "angle between the femur's long axis (robust line through the periosteal-envelope centroids of the shaft) and the slice normal (auto ROI only)",
           code="ctmorph.segment.axis.fit_bone_axis", test="tests/test_axis.py::test_tilted_cylinder_axis_is_recovered_within_0_3_degrees", flag="--align"),
    Column("axis_aligned", "", "True when the scan was analysed resampled in slices perpendicular to the bone axis (tilt >= 3°; section numbers are then where the axis crosses each slice)",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_axis.py::test_aligned_view_makes_the_cylinder_and_plate_axis_aligned", flag="--align"),
    Column("voi_first_slice", "section no.", "lowest section number in the VOI, numbered as the slice files are",
           code="ctmorph.segment.auto_trabecular_voi", test="tests/test_voi.py::test_voi_is_placed_proximal_of_the_reference", flag="--roi-offset-mm, --roi-offset-frac, --ref-slice, --overrides"),
    Column("voi_last_slice", "section no.", "highest section number in the VOI, numbered as the slice files are",
           code="ctmorph.segment.auto_trabecular_voi", test="tests/test_voi.py::test_voi_is_placed_proximal_of_the_reference", flag="--roi-offset-mm, --roi-height-mm, --roi-offset-frac, --roi-height-frac, --ref-slice, --overrides"),
    Column("voi_offset_mm", "mm", "VOI start proximal of the reference slice",
           code="ctmorph.segment.auto_trabecular_voi", test="tests/test_voi.py::test_voi_is_placed_proximal_of_the_reference", flag="--roi-offset-mm, --roi-offset-frac"),
    Column("voi_height_mm", "mm", "VOI length along the stack",
           code="ctmorph.segment.auto_trabecular_voi", test="tests/test_voi.py::test_voi_is_placed_proximal_of_the_reference", flag="--roi-height-mm, --roi-height-frac"),
    Column("plate_end_distance_mm", "mm", "auto ROI: distance from the growth plate's distal-most cartilage slice to the distal end of the scan (small: the scan may cut the plate)",
           code="ctmorph.segment.find_growth_plate", test="tests/test_qc.py::test_flag_boundaries", flag="--distal-end"),
    Column("voi_offset_frac", "", "VOI start proximal of the reference slice as a fraction of bone_length_mm (--roi-offset-frac)",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_roi_modes.py::test_cli_roi_offset_frac_equals_mm", flag="--roi-offset-frac"),
    Column("voi_height_frac", "", "VOI length as a fraction of bone_length_mm (--roi-height-frac)",
           code="ctmorph.pipeline.analyze_scan", test="tests/test_roi_modes.py::test_cli_roi_offset_frac_equals_mm", flag="--roi-height-frac"),
    Column("bone_length_mm", "mm", "length of the whole bone along the stack: slices from the first to the last with a bone cross-section (VOIs given as fractions of bone length)",
           code="ctmorph.segment.voi.whole_bone_extent", test="tests/test_roi_modes.py::test_whole_bone_extent", flag="--roi-offset-frac, --roi-height-frac"),
    Column("TV", "mm³", "tissue volume: VOI voxel count × voxel volume", BOUXSEIN_2010,
           code="ctmorph.morphometry.tissue_volume", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates"),
    Column("BV", "mm³", "bone volume: bone voxels in the VOI × voxel volume", BOUXSEIN_2010,
           code="ctmorph.morphometry.bone_volume", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates"),
    Column("BV/TV", "%", "bone volume fraction by voxel counting", BOUXSEIN_2010,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates"),
    Column("BS", "mm²", "bone surface: marching-cubes area of the bone/marrow interface inside the VOI; the VOI wall and the image border are not surfaces", LORENSEN_1987,
           code="ctmorph.morphometry.bone_surface", test="tests/test_morphometry_phantoms.py::test_bone_surface_excludes_voi_wall_and_image_border"),
    Column("BS/BV", "1/mm", "bone surface to bone volume ratio", BOUXSEIN_2010,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates"),
    Column("BS/TV", "1/mm", "bone surface density", BOUXSEIN_2010,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates"),
    Column("Tb.Th", "mm", "trabecular thickness: volume-weighted mean local thickness (largest-sphere diameter) of bone in the VOI", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates, tests/test_thickness.py::test_matches_brute_force", flag="--thickness-convention"),
    Column("Tb.Th.SD", "mm", "standard deviation of local bone thickness over bone voxels in the VOI", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates", flag="--thickness-convention"),
    Column("Tb.Th.Max", "mm", "largest local bone thickness in the VOI", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_voi_cutting_a_plate_in_half_measures_full_thickness", flag="--thickness-convention"),
    Column("Tb.Sp", "mm", "trabecular separation: volume-weighted mean local thickness of marrow in the VOI (marrow bounded by bone and the endocortical surface)", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates, tests/test_morphometry_phantoms.py::test_marrow_space_bounds_separation", flag="--thickness-convention"),
    Column("Tb.Sp.SD", "mm", "standard deviation of local marrow thickness over marrow voxels in the VOI", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates", flag="--thickness-convention"),
    Column("Tb.Sp.Max", "mm", "largest local marrow thickness in the VOI", HILDEBRAND_1997,
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates", flag="--thickness-convention"),
    Column("Tb.N", "1/mm", "trabecular number, direct: 1 / mean distance between the mid-axes (skeleton) of the bone", HILDEBRAND_1999,
           code="ctmorph.morphometry.trabecular_number", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates, tests/test_morphometry_phantoms.py::test_rod_lattice"),
    Column("Tb.N.model", "1/mm", "trabecular number, plate model: (BV/TV) / Tb.Th, as quoted by CTAn users", "Parfitt AM et al. (1987) J Bone Miner Res 2:595-610",
           code="ctmorph.morphometry.trabecular_morphometry", test="tests/test_morphometry_phantoms.py::test_axis_aligned_plates", flag="--thickness-convention"),
    Column("Tb.Pf", "1/mm", "trabecular pattern factor (BS1 - BS2)/(BV1 - BV2) after a one-voxel 6-neighbourhood dilation; surfaces by marching cubes and volumes by voxels in the VOI (convex > 0, concave < 0)", "Hahn M et al. (1992) Bone 13:327-330",
           code="ctmorph.morphometry.pattern_factor", test="tests/test_pattern_factor.py::test_ball_reads_two_over_radius"),
    Column("Conn", "", "connectivity 1 - χ of the bone after Odgaard-Gundersen edge correction", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182",
           code="ctmorph.morphometry.connectivity", test="tests/test_connectivity.py::test_rod_lattice_conn_d_is_two_per_cell"),
    Column("Conn.D", "1/mm³", "connectivity density (1 - χ) / TV, 26-connected bone, edge corrected", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182",
           code="ctmorph.morphometry.connectivity", test="tests/test_connectivity.py::test_rod_lattice_conn_d_is_two_per_cell, tests/test_connectivity.py::test_doubling_spacing_divides_conn_d_by_eight_exactly"),
    Column("Euler", "", "Euler characteristic χ of the bone in the VOI (26-connected bone, 6-connected marrow), uncorrected",
           code="ctmorph.morphometry.connectivity", test="tests/test_connectivity.py::test_euler_of_known_shapes, tests/test_connectivity.py::test_euler_matches_skimage_on_random_volumes"),
    Column("Euler.corrected", "", "Euler characteristic after the Odgaard-Gundersen edge correction (the VOI's share of the structure's χ)", "Odgaard A, Gundersen HJ (1993) Bone 14:173-182",
           code="ctmorph.morphometry.connectivity", test="tests/test_connectivity.py::test_box_correction_equals_odgaard_gundersen_formula"),
    Column("SMI", "", "structure model index 6·BV·(dBS/dr)/BS² (plate 0, rod 3, sphere 4), exact derivative of the marching-cubes area under a normal offset", HILDEBRAND_1997,
           code="ctmorph.morphometry.smi", test="tests/test_smi.py::test_ball_is_four, tests/test_smi.py::test_long_rod_is_three"),
    Column("SMI+", "", "SMI contribution of the convex part of the surface", "Salmon PL et al. (2015) Front Endocrinol 6:162",
           code="ctmorph.morphometry.smi", test="tests/test_smi.py::test_hollow_ball_has_the_analytic_convex_and_concave_parts"),
    Column("SMI-", "", "SMI contribution of the concave part of the surface (negative)", "Salmon PL et al. (2015) Front Endocrinol 6:162",
           code="ctmorph.morphometry.smi", test="tests/test_smi.py::test_hollow_ball_has_the_analytic_convex_and_concave_parts"),
    Column("SMI.concave_fraction", "", "fraction of bone surface area that is concave, where SMI is unreliable", "Salmon PL et al. (2015) Front Endocrinol 6:162",
           code="ctmorph.morphometry.smi", test="tests/test_smi.py::test_hollow_ball_has_the_analytic_convex_and_concave_parts"),
    Column("DA", "", "degree of anisotropy 1 - μmin/μmax of the fitted MIL fabric tensor M (1/MIL² = ωᵀMω), fixed Fibonacci direction set (= 1 - (MILmin/MILmax)², as BoneJ)", "Harrigan TP, Mann RW (1984) J Mater Sci 19:761-767",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_tilted_plates_are_fully_anisotropic_with_the_normal_as_shortest_mil"),
    Column("MIL.min", "mm", "smallest principal mean intercept length",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_result_fields_and_units"),
    Column("MIL.mid", "mm", "middle principal mean intercept length",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_result_fields_and_units"),
    Column("MIL.max", "mm", "largest principal mean intercept length",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_result_fields_and_units"),
    Column("MIL.dir.z", "", "z component of the main direction (largest MIL) of the fabric",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_rods_along_one_axis_give_that_axis_as_main_direction"),
    Column("MIL.dir.y", "", "y component of the main direction (largest MIL) of the fabric",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_rods_along_one_axis_give_that_axis_as_main_direction"),
    Column("MIL.dir.x", "", "x component of the main direction (largest MIL) of the fabric",
           code="ctmorph.morphometry.anisotropy", test="tests/test_anisotropy.py::test_rods_along_one_axis_give_that_axis_as_main_direction"),
    Column("ct_first_slice", "section no.", "lowest section number of the cortical (diaphyseal) VOI",
           code="ctmorph.pipeline.analyze_scan", flag="--cortical-offset-mm"),
    Column("ct_last_slice", "section no.", "highest section number of the cortical (diaphyseal) VOI",
           code="ctmorph.pipeline.analyze_scan", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Tt.Ar", "mm²", "total cross-sectional area inside the periosteal envelope, mean over slices", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Ct.Ar", "mm²", "cortical bone area, mean over slices", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Ma.Ar", "mm²", "marrow area: Tt.Ar - Ct.Ar (includes intracortical pores)", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Ct.Ar/Tt.Ar", "%", "cortical area fraction", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Ct.Th", "mm", "cortical thickness: volume-weighted mean 3-D local thickness of the cortex", HILDEBRAND_1997,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth, tests/test_cortical.py::test_thin_wall_thickness_within_half_voxel", flag="--cortical-offset-mm, --cortical-height-mm, --thickness-convention"),
    Column("Ct.Th.SD", "mm", "SD of the local thickness of the cortex", HILDEBRAND_1997,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_circular_tube_truth", flag="--cortical-offset-mm, --cortical-height-mm, --thickness-convention"),
    Column("Ct.Po", "%", "cortical porosity: non-bone volume between the periosteal and endosteal surfaces / (that + cortical bone volume)", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_porosity_of_enclosed_pores", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("J", "mm⁴", "polar moment of inertia of the cortical bone about its centroid, mean over slices", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_rectangle_moments_exact_with_pixel_self_moments", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Imax", "mm⁴", "maximum principal second moment of area of the cortical bone, mean over slices", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_elliptical_tube_principal_moments", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Imin", "mm⁴", "minimum principal second moment of area of the cortical bone, mean over slices", BOUXSEIN_2010,
           code="ctmorph.morphometry.cortical_morphometry", test="tests/test_cortical.py::test_elliptical_tube_principal_moments", flag="--cortical-offset-mm, --cortical-height-mm"),
    Column("Ct.TMD", "g/cm³ HA", "mean calibrated density of cortical bone (surface layer eroded as for TMD)", BOUXSEIN_2010,
           code="ctmorph.morphometry.density_metrics", test="tests/test_calibration.py::test_bmd_and_tmd_within_2_percent", flag="--calibration, --tmd-erosion-vox, --cortical-offset-mm, --cortical-height-mm"),
    Column("BMD", "g/cm³ HA", "mean calibrated density of the VOI (bone and marrow)", BOUXSEIN_2010,
           code="ctmorph.morphometry.density_metrics", test="tests/test_calibration.py::test_bmd_and_tmd_within_2_percent, tests/test_density_chunked.py::test_matches_a_numpy_oracle, tests/test_sample_density.py::test_sample_study_bmd_tmd_through_the_cli", flag="--calibration"),
    Column("TMD", "g/cm³ HA", "mean calibrated density of bone voxels only", BOUXSEIN_2010,
           code="ctmorph.morphometry.density_metrics", test="tests/test_calibration.py::test_bmd_and_tmd_within_2_percent, tests/test_calibration.py::test_tmd_erosion_keeps_partial_volume_out, tests/test_density_chunked.py::test_matches_a_numpy_oracle", flag="--calibration, --tmd-erosion-vox"),
    Column("smooth_sigma_vox", "voxel", "Gaussian smoothing sigma before thresholding",
           code="ctmorph.segment.threshold.smooth", test="tests/test_threshold.py::test_smooth_matches_scipy", flag="--smooth-sigma"),
    Column("thickness_convention", "", "local-thickness convention: corrected (half a voxel subtracted) or uncorrected (centre-to-centre)",
           code="ctmorph.morphometry.local_thickness", test="tests/test_morphometry_phantoms.py::test_uncorrected_convention_on_plates", flag="--thickness-convention"),
    Column("n_slices", "", "slices in the scan",
           code="ctmorph.io.read_scan", test="tests/test_io_scan.py::test_roundtrip"),
    Column("input_hash", "", "sha256 of the log and every slice file",
           code="ctmorph.io.Scan.input_hash", test="tests/test_run_integrity.py::test_changed_content_with_same_size_and_mtime_needs_verify_inputs"),
    Column("config_hash", "", "hash of the analysis settings",
           code="ctmorph.config.AnalysisConfig.digest"),
    Column("ctmorph_version", "", "software version that produced the row",
           code="ctmorph.pipeline.analyze_scan"),
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


def column_units(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{name: (unit, description)}`` of registered columns, in the order given.

    The unit tables of the measuring modules (e.g.
    :data:`ctmorph.morphometry.TRABECULAR_COLUMNS`) are made with it, so they are views of
    this registry, never copies.

    Raises
    ------
    KeyError
        A name that is not in the registry.
    """
    return {n: (COLUMN_BY_NAME[n].unit, COLUMN_BY_NAME[n].description) for n in names}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(pointer: str) -> str:
    return f"`{pointer}`" if pointer else ""


def definitions_table(columns: Sequence[Column] = COLUMNS) -> str:
    """The README's "Definitions" table (Markdown): one row per column, in registry order.

    Returns
    -------
    str
        Header, separator and rows, each line ending in a newline.
    """
    lines = ["| column | unit | definition | computed by | checked by | changed by |",
             "|---|---|---|---|---|---|"]
    for c in columns:
        definition = c.description + (f" ({c.reference})" if c.reference else "")
        tests = "<br>".join(f"`{t}`" for t in c.tests)
        flags = ", ".join(f"`{f}`" for f in c.flags)
        lines.append(f"| `{_cell(c.name)}` | {_cell(c.unit)} | {_cell(definition)} | "
                     f"{_code(c.code)} | {tests} | {flags} |")
    return "\n".join(lines) + "\n"


def describe(name: str) -> str:
    """Everything the registry knows about column ``name``, one field a line.

    Raises
    ------
    KeyError
        ``name`` is not a column.
    """
    c = COLUMN_BY_NAME[name]
    fields = [("column", c.name), ("unit", c.unit or "-"), ("definition", c.description),
              ("reference", c.reference or "-"), ("computed by", c.code or "-"),
              ("checked by", ", ".join(c.tests) or "-"), ("changed by", c.flag or "-")]
    return "\n".join(f"{k + ':':<12} {v}" for k, v in fields)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ctmorph.columns [NAME...]``: describe columns (all names without one)."""
    names = list(sys.argv[1:] if argv is None else argv)
    if not names:
        print("\n".join(c.name for c in COLUMNS))
        return 0
    unknown = [n for n in names if n not in COLUMN_BY_NAME]
    if unknown:
        print(f"not a column: {', '.join(unknown)}", file=sys.stderr)
        return 1
    print("\n\n".join(describe(n) for n in names))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
