"""The femur as implicit geometry in its anatomical frame (mm): shaft, metaphysis, condyles,
growth plate, trabeculae (:class:`FemurModel`)."""


from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage, special

from ..fields import (
    GridField,
    gaussian_noise_field,
    rotation_taking_z_to,
    sheet_field,
    smoothstep,
)
from .design import (
    ARTIC,
    BLEND,
    BRIDGE,
    CAP_BELOW_PLATE,
    CAP_BLEND,
    CART,
    CONDYLE_C,
    CONDYLE_R,
    CORT,
    CORTEX_LENGTH,
    CORTEX_START,
    CUT_BLEND,
    EPI,
    EPI_CELL_MM,
    EPI_PLATE_HOLES,
    EPI_PLATE_MM,
    GROOVE_R,
    GROOVE_Y,
    MARROW,
    META_BA,
    NOTCH_C,
    NOTCH_R,
    OUTSIDE,
    PRIM,
    PRIMARY_SIGMA,
    PROB,
    RASTER_MM,
    RING,
    RIPPLE_SIGMA_MM,
    SCAR_MM,
    SECONDARY_END_MM,
    SHAFT_BA,
    SOFT,
    THICKNESS_VARIATION,
    TRAB,
    TROCHLEA_C,
    TROCHLEA_R,
    VOI_DESIGN,
    Anatomy,
    Specimen,
)

logger = logging.getLogger(__name__)



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
    tail = 0.7 * (1.0 - smoothstep((d - 3.5) / (SECONDARY_END_MM - 3.5)))
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
        ml, ap = META_BA[1] * s, META_BA[0] * s
        ur = (ml + 0.2) / math.cos(tau) + 0.1
        vr = (ap + 0.2) / math.cos(tau) + 0.1
        hr = RASTER_MM
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
        sig = RIPPLE_SIGMA_MM / hr
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
        thick = np.float32(a.plate_thickness_mm) * (1.0 + np.float32(THICKNESS_VARIATION)
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
        self._holes = hf > float(np.quantile(hf, 1.0 - EPI_PLATE_HOLES))

        # design reference: the proximal-most point of the cartilage (or scar) over the plate
        top = h + (self._half if a.plate_present else np.float32(0.5 * SCAR_MM))
        tz = self._plate_points(top)[0]
        bot = h - (self._half if a.plate_present else np.float32(0.5 * SCAR_MM))
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

        self._build_fields(a, specimen, rng, s, float(bz.min()), plate_top, ur, vr)
        self.build_seconds = time.perf_counter() - t0

    def _build_fields(self, a: Anatomy, specimen: Specimen,
                      rng: Callable[[int], np.random.Generator], s: float, bz_min: float,
                      plate_top: float, ur: float, vr: float) -> None:
        """The random fields after the plate: secondary and epiphyseal trabeculae, primary
        spongiosa, soft tissue; the bone's reach; the thresholds calibrated to the design."""
        # ---- secondary spongiosa: sheet field (elongated along z) and perforation field
        d = self.design
        ymax, xmax = 2.05 * s, 2.7 * s
        self._bbox_yx = (ymax, xmax)
        z_lo = bz_min - 0.05
        self.trabecular_top_mm = plate_top + SECONDARY_END_MM + 0.05
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
        he = EPI_CELL_MM / 4.0
        e_rng = rng(8)
        self._epi = GridField.covering(
            (-0.05, -ymax, -xmax), (plate_top + 0.05, ymax, xmax), he,
            lambda shp: sheet_field(gaussian_noise_field(e_rng, shp, 4.0)))
        # ---- primary spongiosa field in plate coordinates (depth, v, u)
        self._primary: GridField | None = None
        if a.plate_present and a.primary_bv_tv > 0:
            hd, huv = 0.015, 0.01  # grid along the normal and across
            p_rng = rng(5)
            sig_p = (PRIMARY_SIGMA[0] / hd, PRIMARY_SIGMA[1] / huv, PRIMARY_SIGMA[1] / huv)
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
        b0, a0 = SHAFT_BA[0] * s, SHAFT_BA[1] * s
        b1, a1 = META_BA[0] * s, META_BA[1] * s
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
        cap = np.float32(self.plate_level_mm - CAP_BELOW_PLATE * s) - z
        f = _smax(col, cap, CAP_BLEND * s)
        cz, cy, cx = (v * s for v in CONDYLE_C)
        r = tuple(v * s for v in CONDYLE_R)
        f = _smin(f, _ellipsoid(z, y, x, (cz, cy, cx), r), BLEND * s)
        f = _smin(f, _ellipsoid(z, y, x, (cz, cy, -cx), r), BLEND * s)
        f = _smin(f, _ellipsoid(z, y, x, tuple(v * s for v in TROCHLEA_C),
                                tuple(v * s for v in TROCHLEA_R)), BLEND * s)
        notch = _ellipsoid(z, y, x, tuple(v * s for v in NOTCH_C), tuple(v * s for v in NOTCH_R))
        f = _smax(f, -notch, CUT_BLEND * s)
        groove = np.sqrt((y - np.float32(GROOVE_Y * s)) ** 2 + x * x) - np.float32(GROOVE_R * s)
        groove = _smax(groove, z - np.float32(self.plate_level_mm - 0.25 * s), 0.1 * s)
        return _smax(f, -groove, CUT_BLEND * s)

    def cortex_thickness(self, z: np.ndarray) -> np.ndarray:
        """Cortical thickness (mm) at anatomical level ``z`` (mm): the shell over the epiphysis
        and metaphysis, thickening proximally to the diaphyseal cortex."""
        t = smoothstep((np.asarray(z, np.float32) - np.float32(self.plate_level_mm
                                                               + CORTEX_START))
                       / np.float32(CORTEX_LENGTH))
        return (np.float32(self.shell_mm)
                + np.float32(self.diaphysis_cortex_mm - self.shell_mm) * t).astype(np.float32)

    def extreme_along(self, g: np.ndarray, lowest: bool) -> float:
        """Smallest (``lowest``) or largest value of ``g . a`` over the distal end of the bone
        (condyles and trochlea, with articular cartilage), mm."""
        s = self._s
        vals = []
        for c, r in (((CONDYLE_C[0], CONDYLE_C[1], CONDYLE_C[2]), CONDYLE_R),
                     ((CONDYLE_C[0], CONDYLE_C[1], -CONDYLE_C[2]), CONDYLE_R),
                     (TROCHLEA_C, TROCHLEA_R)):
            cc, rr = np.asarray(c) * s, np.asarray(r) * s
            proj, half = float(g @ cc), float(np.linalg.norm(rr * g))
            vals.append(proj - half if lowest else proj + half)
        pad = BLEND * s / 4.0 + self._artic
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
        iv = np.clip(np.rint((v - np.float32(self._raster_origin[0])) / np.float32(RASTER_MM)),
                     0, nv - 1).astype(np.intp)
        iu = np.clip(np.rint((u - np.float32(self._raster_origin[1])) / np.float32(RASTER_MM)),
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
        z0 = self.design_reference_mm + VOI_DESIGN[0]
        z, y, x = self._interior_samples(rng, z0, z0 + VOI_DESIGN[1], 400_000)
        prof = _secondary_profile(self._depth(z, y, x)).astype(np.float64)
        u = self._secondary_u(z, y, x)
        order = np.sort(u)
        lut = order[np.minimum((PROB * order.size).astype(np.intp), order.size - 1)]
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
        out = np.full(z.size, OUTSIDE, dtype=np.uint8)
        cand = np.flatnonzero((y * y + x * x < self._reach2) & (z > self._z_reach_lo))
        if cand.size == 0:
            return out
        zc, yc, xc = z[cand], y[cand], x[cand]
        f = self.outer_distance(zc, yc, xc)
        reach = max(self._soft_max, self._artic)
        o = np.flatnonzero((f >= 0) & (f < reach))
        if o.size:
            lab = np.full(o.size, OUTSIDE, dtype=np.uint8)
            if self._soft is not None:
                lab[f[o] < self._soft(zc[o], yc[o], xc[o])] = SOFT
            if self._artic > 0:
                lab[(f[o] < self._artic) & (zc[o] < self.articular_top_mm)] = ARTIC
            out[cand[o]] = lab
        ins = np.flatnonzero(f < 0)
        cort = f[ins] > -self.cortex_thickness(zc[ins])
        out[cand[ins[cort]]] = CORT
        if self.anatomy.plate_present and self.anatomy.ring_open_fraction > 0:
            c = cand[ins[cort]]
            w, v, u = self.plate_coordinates(z[c], y[c], x[c])
            iv, iu = self._raster_index(v, u)
            ring = np.abs(w - self._h[iv, iu]) < self._half[iv, iu]
            if np.isfinite(self._ring_level):
                k = np.flatnonzero(ring)
                ring[k] = self._ring_angle_field(np.arctan2(v[k], u[k])) <= self._ring_level
            out[c[ring]] = RING
        endo = ins[~cort]
        if endo.size:
            out[cand[endo]] = self._interior(zc[endo], yc[endo], xc[endo])
        return out

    def _interior(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = self.anatomy
        lab = np.full(z.size, MARROW, dtype=np.uint8)
        w, v, u = self.plate_coordinates(z, y, x)
        iv, iu = self._raster_index(v, u)
        dist = w - self._h[iv, iu]
        if a.plate_present:
            half = self._half[iv, iu]
            cart = np.abs(dist) < half
            epi_region = dist <= -half
            depth = dist - half
            epi_plate = epi_region & (dist > -half - np.float32(EPI_PLATE_MM)) & \
                ~self._holes[iv, iu]
        else:
            cart = np.zeros(z.size, dtype=bool)
            epi_region = dist < 0
            depth = dist
            epi_plate = np.abs(dist) < np.float32(0.5 * SCAR_MM)
            epi_plate &= ~self._holes[iv, iu]
        e = np.flatnonzero(epi_region)
        if e.size:
            ev = np.abs(self._epi(z[e], y[e], x[e]))
            lab[e[ev < np.float32(self.epiphysis_threshold)]] = EPI
        m = np.flatnonzero((depth >= 0) & (depth < np.float32(SECONDARY_END_MM)))
        if m.size:
            dm = depth[m]
            p = np.float32(self.design.bv_tv * self.secondary_scale) * _secondary_profile(dm)
            thr = np.interp(p, PROB, self._u_lut).astype(np.float32)
            bone = self._secondary_u(z[m], y[m], x[m]) < thr
            lab[m[bone]] = TRAB
            if self._primary is not None:
                k = np.flatnonzero(dm < np.float32(a.primary_mm))
                if k.size:
                    dk = dm[k]
                    rho = a.primary_bv_tv * (1.0 - dk / np.float32(a.primary_mm)) ** 1.5
                    thr_p = special.ndtri(np.clip(1.0 - rho, 1e-6, 1.0)).astype(np.float32)
                    mk = m[k]
                    pv = self._primary(dk, v[mk], u[mk])
                    lab[mk[pv > thr_p]] = PRIM
        if a.plate_present:
            lab[epi_plate] = EPI
            lab[cart] = CART
            lab[cart & self._bridged[iv, iu]] = BRIDGE
        else:
            lab[epi_plate] = BRIDGE
        return lab
