"""The scan of a realistic femur: tube, fluid, bubbles, the frame, grey levels, noise and
artefacts (:func:`make_realistic_femur`)."""


from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..fields import (
    GridField,
    gaussian_noise_field,
    ring_profile,
    rotation_taking_z_to,
    round_roi_zeros,
    sheet_field,
    speck_positions,
)
from .design import (
    AIR,
    BRIDGE,
    BUBBLE,
    CART,
    CORT,
    FLUID,
    FOAM,
    GREY_LEVELS,
    MARROW,
    OUTSIDE,
    REFERENCE_CS_WINDOW,
    RING,
    SOFT,
    TRAB,
    TUBE,
    VOI_DESIGN,
    Anatomy,
    ScanSettings,
    Specimen,
    finite,
)
from .model import FemurModel
from .truth import RealisticFemur, ReferenceTruth, TruthVoi

logger = logging.getLogger(__name__)



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
    finite("voi_offset_mm", voi_offset_mm, 0.0, 10.0)
    finite("voi_height_mm", voi_height_mm, 0.01, 10.0)
    t0 = time.perf_counter()
    model = FemurModel(anatomy, specimen, seed)
    t_model = time.perf_counter() - t0
    lay = _layout(model, specimen, scan, max(voi_offset_mm + voi_height_mm, sum(VOI_DESIGN)))
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
    base = np.full((ny, nx), AIR, dtype=np.uint8)
    base[r_t < lay["tube_outer_mm"]] = TUBE
    base[r_t < lay["tube_inner_mm"]] = FLUID
    bubbles = _bubbles(model, specimen, lay, rng(1)) if specimen.bubbles else []
    foam, foam_field, foam_thr = _foam(specimen, scan, lay, nz, vox, rng)

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
        np.copyto(lab, out, where=lab == OUTSIDE)
        labels[z0:z1] = lab
    _bubbles_and_foam(labels, bubbles, foam, foam_field, foam_thr, r_t < lay["tube_inner_mm"],
                      vox)
    t_labels = time.perf_counter() - t1

    # ---- grey: levels, cupping, correlated noise, blur, rings, specks, window, bits
    t2 = time.perf_counter()
    grey, speck_list = _grey(labels, anatomy, specimen, scan, seed, vox, rng)
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


def _foam(specimen: Specimen, scan: ScanSettings, lay: dict[str, Any], nz: int, vox: float,
          rng: Callable[[int], np.random.Generator]
          ) -> tuple[tuple[int, int] | None, GridField | None, float]:
    """The foam spacer's slices, its wall field and threshold (None without foam)."""
    ty, tx = lay["tube_centre_mm"]
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

    return foam, foam_field, foam_thr


def _bubbles_and_foam(labels: np.ndarray, bubbles: list[Any], foam: tuple[int, int] | None,
                      foam_field: GridField | None, foam_thr: float, inside: np.ndarray,
                      vox: float) -> None:
    """Bubbles replace fluid; foam walls and pores replace fluid and bubbles at one end
    (``inside``: the tube's inner disc)."""
    nz, ny, nx = labels.shape
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
        part[ball & (part == FLUID)] = BUBBLE
    # foam: walls and air pores instead of fluid and bubbles at one scan end
    if foam is not None and foam_field is not None:
        iy, ix = np.nonzero(inside)
        for z in range(*foam):
            sl = labels[z]
            sel = (sl[iy, ix] == FLUID) | (sl[iy, ix] == BUBBLE)
            py, px = iy[sel], ix[sel]
            fv = np.abs(foam_field(np.full(py.size, z * vox, np.float32),
                                   (py * vox).astype(np.float32),
                                   (px * vox).astype(np.float32)))
            sl[py, px] = np.where(fv < np.float32(foam_thr), FOAM, AIR).astype(np.uint8)


def _grey(labels: np.ndarray, anatomy: Anatomy, specimen: Specimen, scan: ScanSettings,
          seed: int, vox: float, rng: Callable[[int], np.random.Generator]
          ) -> tuple[np.ndarray, list[Any]]:
    """The reconstruction: grey levels, cupping, correlated noise, blur, rings, specks, the CS
    window and bit depth, round-ROI zeros; and the specks placed."""
    nz, ny, nx = labels.shape
    levels = np.array(GREY_LEVELS, dtype=np.float32)
    levels[FLUID] = specimen.fluid_grey
    levels[TUBE] = specimen.tube_grey
    levels[SOFT] = specimen.soft_tissue_grey
    levels[FOAM] = specimen.foam_grey
    levels[CART] = anatomy.cartilage_grey
    levels[RING] = anatomy.cartilage_grey
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
    speck_list = speck_positions(rng(4), labels, scan.specks, scan.round_roi,
                                 below=FLUID, z_margin=4, tries=400) if scan.specks else []
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
            m = np.clip((g - np.float32(GREY_LEVELS[AIR]))
                        / np.float32(GREY_LEVELS[CORT] - GREY_LEVELS[AIR]), 0.0, 1.0)
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
        round_roi_zeros(grey)
    return grey, speck_list


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
    ci = np.nonzero(labels == CART)
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
        m = inside & (lab >= MARROW) & (lab <= BRIDGE)
        voi_mask[z] = m
        n_vox += int(np.count_nonzero(m))
        n_bone += int(np.count_nonzero(m & (lab >= TRAB)))
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
