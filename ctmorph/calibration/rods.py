"""HA rods in a phantom scan: detection and the attenuation of each rod's core."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import CalibrationError, ConfigError
from ..io import Scan, read_scan
from .convert import attenuation_to_grey, grey_to_attenuation, scan_window
from .model import RodMeasurement, StrPath

__all__ = [
    "find_rods",
    "measure_rods",
]

logger = logging.getLogger(__name__)



# Rod detection.
_HIST_SLICES = 48  # slices sampled for the threshold and the rod footprints
_FOOTPRINT_FRACTION = 0.5  # a rod is bright in at least this fraction of the sampled slices
_BRIGHT_FRACTION = 0.2  # threshold: background + this fraction of (bright level - background)
_NOISE_SIGMAS = 5.0  # ... but at least this many background noise SDs above the background
_MIN_FILL = 0.9  # area / hole-filled area: below, the object is a tube wall, not a rod
_MIN_SOLIDITY = 0.85  # area / convex-hull area: below, touching rods or not a cylinder
_FULL_SECTION = 0.9  # a slice shows the whole rod when its area >= this x the median area
_MIN_CORE_VOXELS = 30
_MIN_INNER_BACKGROUND = 0.1  # rods inside an object need a medium filling >= 10 % of it


# ---------------------------------------------------------------------------------------------
# Rod detection
# ---------------------------------------------------------------------------------------------


@dataclass
class _Rod:
    """Working state of one rod during detection (slice coordinates in voxels)."""

    footprint: np.ndarray  # (h, w) bool, the rod in its crop
    crop: tuple[slice, slice]  # rod crop in slice coordinates
    inner_radius: float  # inscribed radius of the footprint, voxels
    margin: float  # core = voxels at least this far (voxels) from the rod edge in the slice
    threshold: float  # grey separating the rod from its surroundings
    area: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    s1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    s2: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _smooth(grey: np.ndarray, valid: np.ndarray | None, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores no-data voxels (normalised convolution)."""
    img = grey.astype(np.float32)
    if sigma <= 0:
        return img
    if valid is None:
        return ndimage.gaussian_filter(img, sigma, mode="nearest")
    weight = ndimage.gaussian_filter(valid.astype(np.float32), sigma, mode="constant")
    num = ndimage.gaussian_filter(np.where(valid, img, 0), sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 1e-3, num / weight, 0).astype(np.float32)


def _valid(scan: Scan, grey: np.ndarray) -> np.ndarray | None:
    return grey != 0 if scan.no_data_zero else None


def _sampled(
    scan: Scan, sample: np.ndarray, sigma: float, crop: tuple[slice, slice]
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(smoothed crop, valid crop or None) of each sampled slice."""
    for i in sample:
        grey = scan.read_slice(int(i))
        valid = _valid(scan, grey)
        v = None if valid is None else valid[crop]
        yield _smooth(grey[crop], v, sigma), v


def _otsu_bin(hist: np.ndarray) -> int:
    """Last bin of the lower class of Otsu's split of ``hist``."""
    p = hist.astype(np.float64)
    idx = np.arange(p.size, dtype=np.float64)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * idx)
    total, mtotal = w0[-1], m0[-1]
    w1 = total - w0
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mtotal * w0 - total * m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return int(np.argmax(between))


def _level_threshold(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    crop: tuple[slice, slice],
    mask: np.ndarray | None,
    min_background_fraction: float = 0.0,
) -> float:
    """Grey threshold between a background and the bright objects on it.

    Background: the dominant peak of the darker Otsu class of the smoothed sampled slices
    (within ``mask``), its noise SD from the peak's upper half width; bright level: the 99.9th
    percentile. Threshold: background + max(5 SD, 20 % of bright - background). Raises
    :class:`CalibrationError` when nothing stands 10 SD out of the background, or when the
    background peak (± 3 SD) holds less than ``min_background_fraction`` of the voxels.
    """
    gmax = scan.gmax
    n_bins = min(gmax + 1, 4096)
    edges = np.linspace(-0.5, gmax + 0.5, n_bins + 1)
    hist = np.zeros(n_bins, dtype=np.int64)
    for smooth, valid in _sampled(scan, sample, sigma, crop):
        keep = mask if valid is None else (valid if mask is None else valid & mask)
        hist += np.histogram(smooth if keep is None else smooth[keep], bins=edges)[0]
    if hist.sum() == 0:
        raise CalibrationError(f"{scan.path}: no voxel with data; no HA rod can be found")
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = edges[1] - edges[0]
    mode = int(np.argmax(hist[: _otsu_bin(hist) + 1]))
    above = np.flatnonzero(hist[mode + 1 :] <= hist[mode] / 2.0)
    hwhm = (above[0] + 1) * width if above.size else width
    noise_sd = max(hwhm / 1.1774, width)  # HWHM of a Gaussian = 1.1774 SD
    cdf = np.cumsum(hist) / hist.sum()
    bright = centres[min(int(np.searchsorted(cdf, 0.999)), n_bins - 1)]
    background = centres[mode]
    excess = bright - background
    near = np.abs(centres - background) <= 3 * noise_sd
    if hist[near].sum() < min_background_fraction * hist.sum():
        raise CalibrationError(f"{scan.path}: no uniform background level")
    if excess < 2 * _NOISE_SIGMAS * noise_sd:
        raise CalibrationError(
            f"{scan.path}: no HA rod found: nothing stands out of the background (brightest "
            f"0.1 % at attenuation {_att(scan, bright):.4g}, background "
            f"{_att(scan, background):.4g} ± {_att_step(scan, noise_sd):.2g})"
        )
    return float(background + max(_NOISE_SIGMAS * noise_sd, _BRIGHT_FRACTION * excess))


def _att(scan: Scan, grey: float) -> float:
    return float(grey_to_attenuation(grey, scan_window(scan), scan.gmax))


def _att_step(scan: Scan, grey_step: float) -> float:
    lo, hi = scan_window(scan)
    return grey_step * (hi - lo) / scan.gmax


def _edt_padded(mask: np.ndarray) -> np.ndarray:
    """In-plane distance (voxels) to the nearest voxel outside ``mask``; the crop border is an
    edge too."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _where(scan: Scan, rod: _Rod) -> str:
    cy, cx = ndimage.center_of_mass(rod.footprint)
    vox_mm = scan.voxel_size_um / 1000.0
    y_mm, x_mm = (rod.crop[0].start + cy) * vox_mm, (rod.crop[1].start + cx) * vox_mm
    return f"({y_mm:.2f}, {x_mm:.2f}) mm"


def _bright_objects(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    threshold: float,
    crop: tuple[slice, slice],
    mask: np.ndarray | None,
    *,
    min_diameter_vox: float,
    core_fraction: float,
    edge_margin_vox: float,
) -> list[_Rod]:
    """Solid regions above ``threshold`` in at least half of the sampled slices."""
    from skimage.measure import regionprops

    ny, nx = scan.shape[1:]
    y_off, x_off = crop[0].start or 0, crop[1].start or 0
    count = np.zeros(((crop[0].stop or ny) - y_off, (crop[1].stop or nx) - x_off), np.int32)
    for smooth, valid in _sampled(scan, sample, sigma, crop):
        bright = smooth > threshold
        if valid is not None:
            bright &= valid
        count += bright
    footprint = count >= _FOOTPRINT_FRACTION * len(sample)
    if mask is not None:
        footprint &= mask
    labels, _ = ndimage.label(footprint)
    pad = int(math.ceil(3 * sigma)) + 2
    min_area = math.pi * (min_diameter_vox / 2) ** 2
    rods = []
    for prop in regionprops(labels):
        if prop.area < min_area:
            continue
        y0, x0, y1, x1 = prop.bbox
        rod_crop = (
            slice(max(y_off + y0 - pad, 0), min(y_off + y1 + pad, ny)),
            slice(max(x_off + x0 - pad, 0), min(x_off + x1 + pad, nx)),
        )
        # The rod crop lies inside ``crop``: an inner object's crop is padded like its parent's.
        local = (
            slice(rod_crop[0].start - y_off, rod_crop[0].stop - y_off),
            slice(rod_crop[1].start - x_off, rod_crop[1].stop - x_off),
        )
        rod_fp = labels[local] == prop.label
        inner = float(_edt_padded(rod_fp).max())
        rod = _Rod(
            footprint=rod_fp,
            crop=rod_crop,
            inner_radius=inner,
            margin=max(float(edge_margin_vox), (1.0 - core_fraction) * inner),
            threshold=threshold,
        )
        fill = prop.area / prop.area_filled
        if fill < _MIN_FILL:
            logger.info(
                "%s: hollow bright object at %s ignored (a tube wall?): %.0f %% filled",
                scan.path,
                _where(scan, rod),
                100 * fill,
            )
            continue
        if prop.solidity < _MIN_SOLIDITY:
            raise CalibrationError(
                f"{scan.path}: bright object at {_where(scan, rod)} is not a single cylinder "
                f"(solidity {prop.solidity:.2f}); rods touching each other? Separate them or "
                "scan each rod in its own folder"
            )
        rods.append(rod)
    return rods


def _detect_rods(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    threshold: float | None,
    *,
    min_diameter_vox: float,
    core_fraction: float,
    edge_margin_vox: float,
) -> list[_Rod]:
    """Rods of a phantom scan: bright solid objects. Each object is searched again on its own
    background: when its interior holds bright objects standing clearly out of a uniform level
    (rods in a water-filled tube), those are the rods; otherwise (a rod, cupping or capping
    included: no narrow background peak) the object is the rod."""
    ny, nx = scan.shape[1:]
    whole = (slice(0, ny), slice(0, nx))
    kw = {
        "min_diameter_vox": min_diameter_vox,
        "core_fraction": core_fraction,
        "edge_margin_vox": edge_margin_vox,
    }
    fixed = threshold is not None
    if threshold is None:
        threshold = _level_threshold(scan, sample, sigma, whole, None)
    rods: list[_Rod] = []
    objects = _bright_objects(scan, sample, sigma, threshold, whole, None, **kw)
    if not objects:
        raise CalibrationError(
            f"{scan.path}: no HA rod found (no solid bright cylinder at least "
            f"{min_diameter_vox * scan.voxel_size_um / 1000:.3g} mm across above attenuation "
            f"{_att(scan, threshold):.4g} in half of the slices)"
        )
    for obj in objects:
        inner: list[_Rod] = []
        if not fixed:
            try:
                t_in = _level_threshold(
                    scan, sample, sigma, obj.crop, obj.footprint, _MIN_INNER_BACKGROUND
                )
                inner = _bright_objects(scan, sample, sigma, t_in, obj.crop, obj.footprint, **kw)
            except CalibrationError:
                inner = []
            if inner:
                logger.debug(
                    "%s: object at %s holds %d rods on its own background",
                    scan.path,
                    _where(scan, obj),
                    len(inner),
                )
        rods.extend(inner or [obj])
    return rods


def _rod_masks(
    grey_crop: np.ndarray,
    valid_crop: np.ndarray | None,
    rod: _Rod,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(rod section, rod core) of one slice crop: the bright components touching the rod's
    footprint with their holes filled, and their voxels at least ``rod.margin`` from the
    section's edge."""
    bright = _smooth(grey_crop, valid_crop, sigma) > rod.threshold
    if valid_crop is not None:
        bright &= valid_crop
    labels, n = ndimage.label(bright)
    if n == 0:
        empty = np.zeros_like(bright)
        return empty, empty
    keep = np.unique(labels[rod.footprint & bright])
    # Holes are noise dips: filling them keeps the core selection independent of the noise.
    section = ndimage.binary_fill_holes(np.isin(labels, keep[keep > 0]))
    if valid_crop is not None:
        section &= valid_crop
    core = section & (_edt_padded(section) >= rod.margin)
    return section, core


def find_rods(
    phantom_dir: StrPath | Scan,
    *,
    core_fraction: float = 0.6,
    edge_margin_vox: float = 3.0,
    min_rod_diameter_mm: float = 0.5,
    threshold_attenuation: float | None = None,
    smooth_sigma_vox: float = 1.5,
) -> list[RodMeasurement]:
    """Find the HA rods of one phantom scan and measure their core attenuation.

    Parameters
    ----------
    phantom_dir : path or Scan
        NRecon reconstruction folder of the phantom (one or several upright rods).
    core_fraction : float
        The measured core reaches this fraction of the rod's inscribed radius (0.6: the
        central 60 %), to keep the partial-volume rim and cupping at the edge out.
    edge_margin_vox : float
        ... and stays at least this many voxels inside the rod's edge in every slice; slices
        within this distance of a rod end cap are left out too.
    min_rod_diameter_mm : float
        Bright objects smaller than this (mm) are not rods (specks, dust).
    threshold_attenuation : float, optional
        Attenuation (NRecon CS units) separating the rods from their surroundings. Default:
        from the histogram, the background level plus the larger of 5 noise SDs and 20 % of the
        way to the brightest voxels.
    smooth_sigma_vox : float
        Gaussian smoothing (voxels, in-plane) for finding rods; the measurement uses raw grey.

    Returns
    -------
    list of RodMeasurement
        In order of increasing mean attenuation, ``density_g_cm3`` None.

    Raises
    ------
    CalibrationError
        The scan has no CS window; no rod found; a rod is not a single cylinder; a rod core
        has too few voxels.

    Notes
    -----
    A rod is a solid region bright in at least half of (up to 48 evenly spaced) slices, hollow
    regions (tube walls) excluded; a region whose inside shows bright objects standing out of
    a uniform level (rods in a water-filled tube) is searched again on that level. In every
    slice the rod's section is thresholded on the
    smoothed image and its core is the voxels whose in-plane distance to the section's edge is
    at least ``max(edge_margin_vox, (1 - core_fraction) * inscribed radius)``; slices that do
    not show the whole section (end caps) and their ``edge_margin_vox`` neighbours are
    dropped. The rod value is the mean raw grey of the core converted through the CS window.
    """
    scan = phantom_dir if isinstance(phantom_dir, Scan) else read_scan(phantom_dir)
    return [
        m
        for m, _ in measure_rods(
            scan,
            core_fraction=core_fraction,
            edge_margin_vox=edge_margin_vox,
            min_rod_diameter_mm=min_rod_diameter_mm,
            threshold_attenuation=threshold_attenuation,
            smooth_sigma_vox=smooth_sigma_vox,
        )
    ]


def measure_rods(
    scan: Scan,
    *,
    core_fraction: float,
    edge_margin_vox: float,
    min_rod_diameter_mm: float,
    threshold_attenuation: float | None,
    smooth_sigma_vox: float,
) -> list[tuple[RodMeasurement, dict[str, Any]]]:
    """Rods with their measurements and QC crops (``image``, ``section``, ``core``)."""
    if not 0 < core_fraction <= 1:
        raise ConfigError(f"core_fraction must be in (0, 1], got {core_fraction!r}")
    if not edge_margin_vox >= 0:
        raise ConfigError(f"edge_margin_vox must be >= 0 voxels, got {edge_margin_vox!r}")
    if not min_rod_diameter_mm > 0:
        raise ConfigError(f"min_rod_diameter_mm must be > 0 mm, got {min_rod_diameter_mm!r}")
    window = scan_window(scan)
    gmax = scan.gmax
    nz = scan.shape[0]
    sigma = float(smooth_sigma_vox)
    sample = np.unique(np.linspace(0, nz - 1, min(nz, _HIST_SLICES)).round().astype(int))

    threshold = None
    if threshold_attenuation is not None:
        threshold = float(attenuation_to_grey(threshold_attenuation, window, gmax))
    vox_mm = scan.voxel_size_um / 1000.0
    rods = _detect_rods(
        scan,
        sample,
        sigma,
        threshold,
        min_diameter_vox=min_rod_diameter_mm / vox_mm,
        core_fraction=core_fraction,
        edge_margin_vox=edge_margin_vox,
    )
    # Full pass: per slice and rod, section area and core sums (shifted for precision).
    for rod in rods:
        rod.area, rod.n = np.zeros(nz, np.int64), np.zeros(nz, np.int64)
        rod.s1, rod.s2 = np.zeros(nz), np.zeros(nz)
    for z in range(nz):
        grey = scan.read_slice(z)
        valid = _valid(scan, grey)
        for rod in rods:
            g = grey[rod.crop]
            section, core = _rod_masks(g, None if valid is None else valid[rod.crop], rod, sigma)
            values = g[core].astype(np.float64) - rod.threshold
            rod.area[z] = np.count_nonzero(section)
            rod.n[z] = values.size
            rod.s1[z] = values.sum()
            rod.s2[z] = np.square(values).sum()

    results = []
    for rod in rods:
        where = _where(scan, rod)
        present = rod.area > 0
        full = rod.area >= _FULL_SECTION * np.median(rod.area[present])
        m_z = int(math.ceil(edge_margin_vox))
        kept = ndimage.binary_erosion(full, iterations=m_z, border_value=1) if m_z else full
        kept &= rod.n > 0
        n_total = int(rod.n[kept].sum())
        if n_total < _MIN_CORE_VOXELS:
            raise CalibrationError(
                f"{scan.path}: rod at {where} has only {n_total} core voxels (rod too short or "
                "too thin for the core margin); lower core_fraction/edge_margin_vox"
            )
        s1, s2 = float(rod.s1[kept].sum()), float(rod.s2[kept].sum())
        mean_shifted = s1 / n_total
        var = max(s2 / n_total - mean_shifted**2, 0.0) * n_total / max(n_total - 1, 1)
        mean_grey = mean_shifted + rod.threshold
        step = (window[1] - window[0]) / gmax
        zs = np.flatnonzero(kept)
        z_mid = int(zs[len(zs) // 2])
        grey = scan.read_slice(z_mid)
        valid = _valid(scan, grey)
        g = grey[rod.crop]
        section, core = _rod_masks(g, None if valid is None else valid[rod.crop], rod, sigma)
        cy, cx = ndimage.center_of_mass(rod.footprint)
        n_kept = int(kept.sum())
        measurement = RodMeasurement(
            folder=str(scan.path),
            scan=scan.name,
            density_g_cm3=None,
            mean_attenuation=float(grey_to_attenuation(mean_grey, window, gmax)),
            sd_attenuation=math.sqrt(var) * step,
            mean_grey=mean_grey,
            n_voxels=n_total,
            n_slices=n_kept,
            first_section=int(scan.sections[zs[0]]),
            last_section=int(scan.sections[zs[-1]]),
            centre_yx_mm=(
                float((rod.crop[0].start + cy) * vox_mm),
                float((rod.crop[1].start + cx) * vox_mm),
            ),
            diameter_mm=2.0 * math.sqrt(float(np.median(rod.area[full])) / math.pi) * vox_mm,
            core_diameter_mm=2.0 * math.sqrt(n_total / n_kept / math.pi) * vox_mm,
            cs_window=window,
            gmax=gmax,
            threshold_attenuation=_att(scan, rod.threshold),
        )
        qc = {"image": g, "section": section, "core": core, "section_no": int(scan.sections[z_mid])}
        results.append((measurement, qc))
        logger.info(
            "%s: rod at %s: attenuation %.5g ± %.2g over %d voxels in %d slices",
            scan.path,
            where,
            measurement.mean_attenuation,
            measurement.sd_attenuation,
            n_total,
            n_kept,
        )
    results.sort(key=lambda item: item[0].mean_attenuation)
    return results


