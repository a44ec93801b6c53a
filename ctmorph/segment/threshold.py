"""Global thresholding: smoothing, Otsu on a (pooled) histogram, speck removal.

One threshold serves a whole study (DESIGN.md §2): :func:`grey_histogram` gives each scan's
histogram, the batch adds them up, and :func:`otsu_threshold` turns the pooled histogram into
one grey value. Per-scan thresholds would bias group comparisons.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, SegmentationError

__all__ = ["grey_histogram", "otsu_threshold", "smooth", "binarize", "despeckle", "despeckle_core"]

logger = logging.getLogger(__name__)


def grey_histogram(image: np.ndarray, *, gmax: int, no_data_zero: bool = False) -> np.ndarray:
    """Count grey values of an integer image.

    Parameters
    ----------
    image : ndarray of uint8 or uint16
        Slices in native grey values.
    gmax : int
        Full-scale grey value (255 or 65535); the histogram has ``gmax + 1`` bins.
    no_data_zero : bool
        If true (round-ROI reconstructions), exact zeros are "no data" and are not counted.

    Returns
    -------
    (gmax + 1,) ndarray of int64
        ``hist[g]`` is the number of voxels of grey value ``g``.
    """
    hist = np.bincount(np.asarray(image).ravel(), minlength=gmax + 1).astype(np.int64)
    if hist.size > gmax + 1:
        raise ConfigError(f"grey values exceed the full scale {gmax}")
    if no_data_zero:
        hist[0] = 0
    return hist


def otsu_threshold(hist: np.ndarray) -> float:
    """Otsu's threshold of a histogram of integer grey values.

    Returns the grey value ``t`` that maximises the between-class variance of the classes
    ``g <= t`` and ``g > t``; segmenting with ``grey > t`` follows. Where empty bins make
    several ``t`` equally good, the midpoint of that run is returned (scikit-image returns its
    first bin), so a clean bimodal histogram gets a threshold halfway between the modes.

    Parameters
    ----------
    hist : (G,) array_like of int
        Voxel counts per grey value ``0 .. G-1``.

    Notes
    -----
    Otsu N. (1979) A threshold selection method from gray-level histograms. IEEE Trans. Syst.
    Man Cybern. 9:62-66.

    Examples
    --------
    >>> otsu_threshold([0, 10, 10, 0, 0, 0, 10, 10])
    3.5
    """
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    if total <= 0:
        raise SegmentationError("cannot compute an Otsu threshold: the histogram is empty")
    g = np.arange(h.size, dtype=np.float64)
    w0 = np.cumsum(h)
    w1 = total - w0
    m0 = np.cumsum(h * g)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - total * m0) ** 2 / (w0 * w1)
    between[(w0 == 0) | (w1 == 0)] = -1.0
    if between.max() < 0:
        raise SegmentationError(
            "cannot compute an Otsu threshold: the image has a single grey value"
        )
    # A run of empty bins between the modes gives a plateau of equal between-class variance:
    # take its midpoint, so the answer does not depend on the direction of the search.
    best = np.flatnonzero(between == between.max())
    return float(best.mean())


def smooth(volume: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Gaussian smoothing in float32, ``sigma_vox`` in voxels (0 = none), edges replicated."""
    out = np.asarray(volume, dtype=np.float32)
    if sigma_vox > 0:
        out = ndimage.gaussian_filter(out, sigma_vox, mode="nearest")
    return out


def binarize(
    grey: np.ndarray, threshold: float, *, sigma_vox: float, chunk: int = 32
) -> np.ndarray:
    """Smooth and threshold a grey stack slab by slab: bone where ``smooth(grey) > threshold``.

    Parameters
    ----------
    grey : (Z, Y, X) ndarray
        Grey values (any real dtype); never converted to float as a whole.
    threshold : float
        Global threshold in the grey units of ``grey``.
    sigma_vox : float
        Gaussian sigma in voxels.
    chunk : int
        Slices smoothed at once; each chunk carries a halo of ``ceil(4 sigma)`` slices so the
        result equals smoothing the whole volume at once.

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    nz = grey.shape[0]
    halo = int(np.ceil(4.0 * sigma_vox)) if sigma_vox > 0 else 0
    out = np.empty(grey.shape, dtype=bool)
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        a, b = max(0, z0 - halo), min(nz, z1 + halo)
        sm = smooth(grey[a:b], sigma_vox)
        out[z0:z1] = sm[z0 - a : z0 - a + (z1 - z0)] > threshold
    return out


def despeckle(
    bone: np.ndarray,
    *,
    min_bone_voxels: int,
    min_marrow_voxels: int,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Remove small bone islands (26-connected) and fill small marrow holes (6-connected).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    min_bone_voxels : int
        Bone components with fewer voxels are removed (noise specks).
    min_marrow_voxels : int
        Non-bone components with fewer voxels that do not touch the volume border are filled
        (closed pores below the resolution are noise).
    valid : (Z, Y, X) ndarray of bool, optional
        Voxels with data; no-data voxels are never filled.

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    out = np.array(bone, dtype=bool, copy=True)
    if min_bone_voxels > 1 and out.any():
        labels, n = ndimage.label(out, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_bone_voxels
        small[0] = False
        removed = int(small.sum())
        out[small[labels]] = False
        logger.debug("despeckle: removed %d bone specks", removed)
        del labels
    if min_marrow_voxels > 1:
        marrow = ~out if valid is None else (~out & valid)
        labels, n = ndimage.label(marrow)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_marrow_voxels
        small[0] = False
        # components touching the border may continue outside the volume: keep them
        border = np.unique(
            np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                            labels[:, -1].ravel(), labels[:, :, 0].ravel(),
                            labels[:, :, -1].ravel()])
        )
        small[border] = False
        out[small[labels]] = True
        logger.debug("despeckle: filled %d marrow pores", int(small.sum()))
    return out


def _face_labels(labels: np.ndarray, first: bool, last: bool) -> np.ndarray:
    """Labels found on the first and/or last z face of ``labels``."""
    faces = ([labels[0].ravel()] if first else []) + ([labels[-1].ravel()] if last else [])
    return np.unique(np.concatenate(faces)) if faces else np.zeros(0, dtype=labels.dtype)


def despeckle_core(
    bone: np.ndarray,
    core: tuple[int, int],
    *,
    min_bone_voxels: int,
    min_marrow_voxels: int,
    valid: np.ndarray | None = None,
    cut_start: bool,
    cut_end: bool,
    check: bool = True,
) -> np.ndarray | None:
    """:func:`despeckle` of a slab cut out of a longer scan, exact on the slices ``core``.

    The slab ends marked ``cut_start`` / ``cut_end`` are not the ends of the scan, so
    components reaching them may continue outside. The result on ``core = (c0, c1)`` equals
    :func:`despeckle` of the whole scan unless such a component could decide it: a bone
    island touching a cut end with fewer than ``min_bone_voxels`` voxels in the slab that
    meets the core, or a marrow component meeting the core that touches a cut end with fewer
    than ``min_marrow_voxels`` voxels or contains bone dropped as such an uncertain island.
    With ``check`` the function then returns None (load a longer slab); without, it returns
    the slab's answer anyway. With at least ``min_bone_voxels + min_marrow_voxels`` slices
    beyond the core at each cut end the answer is always exact (a 26-connected component of
    n voxels spans at most n slices).

    Returns
    -------
    (c1 - c0, Y, X) ndarray of bool or None
    """
    c0, c1 = core
    out = np.array(bone, dtype=bool, copy=True)
    uncertain = None
    if min_bone_voxels > 1 and out.any():
        labels, n = ndimage.label(out, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_bone_voxels
        small[0] = False
        if check and (cut_start or cut_end):
            unc = np.zeros(n + 1, dtype=bool)
            unc[_face_labels(labels, cut_start, cut_end)] = True
            unc &= small
            if unc.any():
                if unc[np.unique(labels[c0:c1])].any():
                    return None
                uncertain = unc[labels]
        out[small[labels]] = False
        del labels
    if min_marrow_voxels > 1:
        marrow = ~out if valid is None else (~out & valid)
        labels, n = ndimage.label(marrow)
        del marrow
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_marrow_voxels
        small[0] = False
        border = np.unique(
            np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                            labels[:, -1].ravel(), labels[:, :, 0].ravel(),
                            labels[:, :, -1].ravel()])
        )
        if check and (cut_start or cut_end):
            meets = np.zeros(n + 1, dtype=bool)
            meets[np.unique(labels[c0:c1])] = True
            meets[0] = False
            doubt = np.zeros(n + 1, dtype=bool)
            doubt[_face_labels(labels, cut_start, cut_end)] = True
            doubt &= small  # kept only because the slab was cut there
            if uncertain is not None:
                doubt[np.unique(labels[uncertain])] = True
            doubt[0] = False
            if (doubt & meets).any():
                return None
        small[border] = False
        out[small[labels]] = True
    return out[c0:c1]
