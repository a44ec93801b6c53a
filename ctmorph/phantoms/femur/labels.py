"""The tissue labels of a sample femur, built slab by slab from the distal end: soft tissue and
air, the cortex, the growth-plate cartilage and its bridges, the epiphyseal, primary and
secondary spongiosa (:func:`femur_labels`), the last following a design BV/TV profile along the
bone (:class:`SecondaryProfile`). Distances along the bone are in mm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..fields import smoothstep
from .design import (
    CAP_MM,
    CART,
    CORT,
    EPI_SHELL_MM,
    MARROW,
    PRIMARY_BV_TV,
    PRIMARY_MM,
    TIP_MM,
    TRAB,
    VOI_HEIGHT_MM,
    VOI_OFFSET_MM,
)
from .fields import FemurFields, upsample_slab
from .geometry import FemurGeometry

__all__ = ["SecondaryProfile", "femur_labels"]


@dataclass(frozen=True)
class SecondaryProfile:
    """Design BV/TV of the secondary spongiosa along the bone.

    It rises behind the primary spongiosa, then falls linearly through the standard VOI
    (1.0-3.0 mm proximal of the reference; its mean there is ``target``), and tapers to zero
    over 0.1 mm from ``taper`` mm (the end of that VOI, or 0.15 mm before the end of the scan).

    Attributes
    ----------
    target : float
        Mean BV/TV (fraction) in the standard VOI.
    taper : float
        Distance (mm proximal of the reference) where the taper starts.
    """

    target: float
    taper: float

    @classmethod
    def for_scan(cls, target: float, ref_mm_est: float, scan_end_mm: float) -> SecondaryProfile:
        """The profile of a scan ``scan_end_mm`` long whose reference lies ``ref_mm_est`` mm
        from its distal end."""
        taper = min(VOI_OFFSET_MM + VOI_HEIGHT_MM + 0.03, scan_end_mm - ref_mm_est - 0.15)
        return cls(target=target, taper=taper)

    def bv_tv(self, s: float) -> float:
        """Design BV/TV (fraction) at ``s`` mm proximal of the reference."""
        if s <= VOI_OFFSET_MM:
            g = 0.7 + 0.45 * float(smoothstep(max(s, 0.0) / VOI_OFFSET_MM))
        else:
            g = 1.15 - 0.3 * (s - VOI_OFFSET_MM) / VOI_HEIGHT_MM
        g *= 1.0 - float(smoothstep((s - self.taper) / 0.1))
        return self.target * g


def femur_labels(fl: FemurFields, geometry: FemurGeometry, profile: SecondaryProfile,
                 shape: tuple[int, int, int], vox: float, distal_first: bool) -> np.ndarray:
    """The label volume of a femur, slab by slab (``k`` = distance index from the distal end).

    Parameters
    ----------
    fl : FemurFields
        The trabecular random fields and their thresholds.
    geometry : FemurGeometry
        Cross-section, cortex and growth plate.
    profile : SecondaryProfile
        Design BV/TV of the secondary spongiosa along the bone.
    shape : (int, int, int)
        Volume shape ``(Z, Y, X)`` in voxels.
    vox : float
        Voxel size in mm.
    distal_first : bool
        True: slice 0 is distal; False: the stack is reversed.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        Labels of :data:`~ctmorph.phantoms.femur.LABELS`.
    """
    nz, ny, nx = shape
    rho, base, bridges = geometry.rho, geometry.base, geometry.bridges
    s_dist, s_prox, s_epi = geometry.s_dist, geometry.s_prox, geometry.s_epi
    prob, k_ea, k_pa, k_pb = fl.prob, fl.k_ea, fl.k_pa, fl.k_pb

    def out_index(k: int) -> int:
        return k if distal_first else nz - 1 - k

    labels = np.empty((nz, ny, nx), dtype=np.uint8)
    slab = 16
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        f_slab = np.abs(upsample_slab(fl.f_coarse, k0, k1, (ny, nx), fl.f_fac))
        w_slab = upsample_slab(fl.g_coarse, k0, k1, (ny, nx), fl.g_fac)
        w_slab -= fl.g_lo
        w_slab *= fl.g_scale
        np.clip(w_slab, 0.0, 1.0, out=w_slab)
        if k0 < k_ea:
            e_slab = np.abs(upsample_slab(fl.e_coarse, k0, min(k1, k_ea), (ny, nx), fl.e_fac))
        for k in range(k0, k1):
            d = (k + 0.5) * vox
            lab = labels[out_index(k)]
            lab[...] = base
            if d < TIP_MM:
                continue
            r_out, wall = geometry.outer_radius(d)
            x_cap = (d - TIP_MM) / CAP_MM
            q_cap = math.sqrt(max(0.0, 1.0 - (1.0 - x_cap) ** 2)) if x_cap < 1.0 else 1.0
            env = rho <= r_out * q_cap
            endo = rho < (r_out - geometry.cortex_thickness(d) * wall) * q_cap
            if x_cap < 1.0:
                # end cap: the vertical distance below the rounded surface must exceed the shell
                qn = np.minimum(rho / r_out, 1.0)
                below = (d - TIP_MM) - CAP_MM * (1.0 - np.sqrt(1.0 - qn**2))
                endo &= below > EPI_SHELL_MM
            np.copyto(lab, np.uint8(CORT), where=env)
            np.copyto(lab, np.uint8(MARROW), where=endo)
            fk = f_slab[k - k0]
            if d < float(s_prox.max()):
                cart = endo & (d >= s_dist) & (d < s_prox)
                np.copyto(lab, np.uint8(CART), where=cart)
                if bridges is not None:
                    np.copyto(lab, np.uint8(TRAB), where=cart & bridges)
                ek_ = e_slab[k - k0] if k < k_ea else np.full_like(fk, np.inf)
                epi_bone = endo & (d < s_dist) & ((ek_ < fl.t_epi) | (d >= s_epi))
                np.copyto(lab, np.uint8(TRAB), where=epi_bone)
            if d >= float(s_prox.min()):
                meta = endo & (d >= s_prox)
                t_s = float(np.interp(profile.bv_tv(d - fl.ref_mm_est), prob, fl.u_lut))
                bone = fk < t_s * w_slab[k - k0]
                if k_pa <= k < k_pb:
                    dprime = d - s_prox
                    rho_p = PRIMARY_BV_TV * (1.0 - np.clip(dprime / PRIMARY_MM, 0.0, 1.0)) ** 2
                    thr_p = np.interp(rho_p, prob, fl.p_lut)
                    thr_p[rho_p <= 0] = np.inf
                    bone |= fl.p_field[k - k_pa] > thr_p
                np.copyto(lab, np.uint8(TRAB), where=meta & bone)
    return labels
