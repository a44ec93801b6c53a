"""The reconstruction of a labelled sample femur: grey levels, partial-volume blur, noise, ring
artefacts, specks, bit depth and round-ROI zeros (:func:`femur_grey`). Grey values are in
8-bit units (16-bit output: × 65535 / 255), blur in voxels."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..fields import ring_profile, round_roi_zeros, speck_positions
from .design import GREY, SOFT

__all__ = ["femur_grey"]


def femur_grey(labels: np.ndarray, distal_first: bool, rng_dep: np.random.Generator,
               rng_noise: np.random.Generator, *, rings: int, ring_amplitude: float,
               specks: int, round_roi: bool, blur_vox: float, noise_sd: float,
               bit_depth: int) -> np.ndarray:
    """The reconstruction of a labelled femur.

    Chunks of 32 slices (with a halo for the blur) run from the distal end in both stack
    orders, so a proximal-first femur is exactly the reversed distal-first one.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of uint8
        Tissue labels (:data:`~ctmorph.phantoms.femur.LABELS`).
    distal_first : bool
        True: slice 0 is distal.
    rng_dep, rng_noise : numpy.random.Generator
        Streams of the rings and specks, and of the noise.
    rings : int
        Number of ring artefacts about the image centre.
    ring_amplitude : float
        Largest ring amplitude (8-bit grey values).
    specks : int
        Number of bright specks in air and soft tissue.
    round_roi : bool
        Grey 0 outside the circle inscribed in the slice.
    blur_vox : float
        Partial-volume Gaussian blur sigma in voxels (0: none).
    noise_sd : float
        Additive noise SD in 8-bit grey values (0: none).
    bit_depth : {8, 16}
        Output type uint8 or uint16.

    Returns
    -------
    (Z, Y, X) ndarray of uint8 or uint16
    """
    nz, ny, nx = labels.shape
    gmax = 255.0 if bit_depth == 8 else 65535.0
    grey = np.empty((nz, ny, nx), dtype=np.uint8 if bit_depth == 8 else np.uint16)
    rings_grey = ring_profile(rng_dep, ny, nx, rings, ring_amplitude) if rings else None
    speck_list = (speck_positions(rng_dep, labels if distal_first else labels[::-1], specks,
                                  round_roi, below=SOFT, z_margin=0, tries=200)
                  if specks else [])
    halo = int(math.ceil(3.0 * blur_vox)) if blur_vox > 0 else 0
    chunk = 32
    # White noise: windows at random offsets into a pool of normal deviates two chunks long
    # (drawing 30 M deviates per scan would dominate the run time).
    n_chunk = chunk * ny * nx
    pool = np.float32(noise_sd) * rng_noise.standard_normal(2 * n_chunk, dtype=np.float32)
    lab_df = labels if distal_first else labels[::-1]
    grey_df = grey if distal_first else grey[::-1]
    for z0c in range(0, nz, chunk):
        z1c = min(nz, z0c + chunk)
        a, b = max(0, z0c - halo), min(nz, z1c + halo)
        g = GREY[lab_df[a:b]]
        if blur_vox > 0:
            ndimage.gaussian_filter(g, blur_vox, mode="nearest", truncate=3.0, output=g)
        g = g[z0c - a : z1c - a]
        if noise_sd > 0:
            off = int(rng_noise.integers(0, pool.size - g.size + 1))
            g += pool[off : off + g.size].reshape(g.shape)
        if rings_grey is not None:
            g += rings_grey
        for zs_, ys_, xs_, size, level in speck_list:
            if z0c <= zs_ < z1c:
                g[zs_ - z0c : zs_ - z0c + size, ys_ : ys_ + size, xs_ : xs_ + size] = level
        if bit_depth != 8:
            g *= np.float32(gmax / 255.0)
        np.rint(g, out=g)
        np.clip(g, 0.0, gmax, out=g)
        grey_df[z0c:z1c] = g
    if round_roi:
        round_roi_zeros(grey)

    return grey
