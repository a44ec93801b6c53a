"""Global thresholding: smoothing, Otsu on a (pooled) histogram, speck removal.

One threshold serves a whole study (docs/DESIGN.md §2): :func:`grey_histogram` gives each scan's
histogram, the batch adds them up, and :func:`otsu_threshold` turns the pooled histogram into
one grey value. Per-scan thresholds would bias group comparisons.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import ConfigError, SegmentationError

__all__ = ["grey_histogram", "otsu_threshold", "smooth", "binarize", "despeckle", "despeckle_core"]

logger = logging.getLogger(__name__)

#: Voxels per block of the label bookkeeping in :func:`despeckle_core` (bounds the int64
#: and boolean temporaries to a few MB).
_BLOCK_VOXELS = 1 << 20


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

    Notes
    -----
    The chunks are smoothed by as many threads as numba may use (scipy's filters release the
    GIL); each writes only its own slices, so the result does not depend on the thread count.
    """
    nz = grey.shape[0]
    halo = int(np.ceil(4.0 * sigma_vox)) if sigma_vox > 0 else 0
    out = np.empty(grey.shape, dtype=bool)

    def one(z0: int) -> None:
        z1 = min(nz, z0 + chunk)
        a, b = max(0, z0 - halo), min(nz, z1 + halo)
        sm = smooth(grey[a:b], sigma_vox)
        out[z0:z1] = sm[z0 - a : z0 - a + (z1 - z0)] > threshold

    starts = range(0, nz, chunk)
    workers = min(numba.get_num_threads(), len(starts))
    if workers <= 1:
        for z0 in starts:
            one(z0)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctmorph-smooth") as ex:
            for _ in ex.map(one, starts):  # re-raises the first error
                pass
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


def _label_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label ``0 .. n`` of a (Z, Y, X) label image, counted a few slices at a
    time (``np.bincount`` would otherwise convert the whole image to int64 at once)."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    step = _slices_per_block(labels)
    for z in range(0, labels.shape[0], step):
        sizes += np.bincount(labels[z : z + step].ravel(), minlength=n + 1)
    return sizes


def _labels_present(labels: np.ndarray, n: int) -> np.ndarray:
    """(n + 1,) bool: which labels ``0 .. n`` occur in ``labels``, a few slices at a time."""
    seen = np.zeros(n + 1, dtype=bool)
    step = _slices_per_block(labels)
    for z in range(0, labels.shape[0], step):
        seen[labels[z : z + step]] = True
    return seen


def _slices_per_block(volume: np.ndarray) -> int:
    """Slices holding about ``_BLOCK_VOXELS`` voxels (at least one)."""
    return max(1, _BLOCK_VOXELS // max(1, int(np.prod(volume.shape[1:]))))


def _set_where(out: np.ndarray, labels: np.ndarray, select: np.ndarray, value: bool) -> None:
    """``out[select[labels]] = value`` in place, a few slices at a time."""
    step = _slices_per_block(labels)
    for z in range(0, labels.shape[0], step):
        part = out[z : z + step]
        part[select[labels[z : z + step]]] = value


def _uncertain_voxels(labels: np.ndarray, unc: np.ndarray, min_bone_voxels: int,
                      cut_start: bool, cut_end: bool) -> np.ndarray:
    """Sorted flat indices of the voxels of the islands flagged in ``unc``.

    Such an island touches a cut face and has fewer than ``min_bone_voxels`` voxels, so it
    lies within ``min_bone_voxels - 1`` slices of that face: only those bands are searched.
    """
    nz = labels.shape[0]
    reach = max(1, min_bone_voxels - 1)
    bands = ([(0, min(nz, reach))] if cut_start else []) + (
        [(max(0, nz - reach), nz)] if cut_end else [])
    if len(bands) == 2 and bands[0][1] >= bands[1][0]:
        bands = [(0, nz)]
    plane = labels.shape[1] * labels.shape[2]
    step = _slices_per_block(labels)
    found = [np.zeros(0, dtype=np.int64)]
    for za, zb in bands:
        for z in range(za, zb, step):
            u = min(zb, z + step)
            found.append(np.flatnonzero(unc[labels[z:u]]) + z * plane)
    return np.concatenate(found)


def _merged_components(labels: np.ndarray, n: int, uvox: np.ndarray) -> np.ndarray:
    """Component of every marrow label once the voxels ``uvox`` become marrow too.

    ``labels`` (6-connected marrow components ``1 .. n``, 0 elsewhere) is the marrow with
    the uncertain islands as bone; ``uvox`` (sorted flat indices, label 0) are the island
    voxels with data. Returns ``(n + 1 + len(uvox),)`` int: graph components of the nodes
    "label k" (index k) and "voxel uvox[i]" (index n + 1 + i), joined where 6-neighbours.
    """
    nz, ny, nx = labels.shape
    flat = labels.reshape(-1)
    z, rem = np.divmod(uvox, ny * nx)
    y, x = np.divmod(rem, nx)
    me = n + 1 + np.arange(uvox.size)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for coord, size, stride in ((z, nz, ny * nx), (y, ny, nx), (x, nx, 1)):
        for sign in (-1, 1):
            inside = (coord + sign >= 0) & (coord + sign < size)
            nb = uvox[inside] + sign * stride
            lab = flat[nb]
            marrow = lab > 0
            src.append(me[inside][marrow])
            dst.append(lab[marrow].astype(np.int64))
            pos = np.searchsorted(uvox, nb)
            pos[pos == uvox.size] = 0
            hit = uvox[pos] == nb if uvox.size else np.zeros(0, dtype=bool)
            src.append(me[inside][hit])
            dst.append(n + 1 + pos[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    m = n + 1 + uvox.size
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(m, m))
    return connected_components(graph, directed=False)[1]


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
    components reaching them may continue outside. The answer returned is always
    :func:`despeckle` of the slab alone on ``core``; with ``check`` it is returned only when
    it provably equals :func:`despeckle` of the whole scan there, else None (load a longer
    slab). Refused are: a bone island that touches a cut end with fewer than
    ``min_bone_voxels`` voxels in the slab (an *uncertain island*: the scan may keep it) and
    meets the core; and a marrow voxel of the core whose fate the slab cannot decide (see
    Notes), e.g. a small marrow component touching a cut end, or a pore sealed off from the
    marrow space only by an uncertain island. With at least
    ``min_bone_voxels + min_marrow_voxels`` slices beyond the core at each cut end the answer
    is always exact (a 26-connected component of n voxels spans at most n slices), so
    ``check=False`` is safe there.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone of the slab.
    core : (int, int)
        Slices ``c0 .. c1 - 1`` of the slab whose answer is wanted.
    min_bone_voxels, min_marrow_voxels, valid
        As for :func:`despeckle` (``valid`` of the slab).
    cut_start, cut_end : bool
        The slab's first / last slice is not the scan's.
    check : bool
        Return None unless the answer is provably the whole scan's.

    Returns
    -------
    (c1 - c0, Y, X) ndarray of bool or None

    Raises
    ------
    ConfigError
        If ``bone`` is not 3-D, ``core`` is not a slice range of it or ``valid`` has another
        shape.

    Notes
    -----
    Marrow proof. Let U be the uncertain islands. Outside U the slab's bone after speck
    removal equals the scan's (an island not touching a cut end is a whole component of the
    scan; one with ``min_bone_voxels`` voxels in the slab has at least as many in the scan),
    and the scan keeps or removes each island of U as a whole. So in the slab the scan's
    marrow is ``M_B ∪ (U_K & valid)`` for some unknown subset ``U_K`` of U, between
    ``M_B`` (all of U kept as bone) and ``M_A`` (all of U removed: the slab's own answer).
    Adding marrow voxels only merges components, so for a marrow voxel v outside U its
    components nest: ``C_B(v) ⊆ C_K(v) ⊆ C_A(v)``, and its component in the scan contains
    ``C_K(v)`` and equals it when ``C_K(v)`` does not touch a cut end. The scan fills v iff
    its component has fewer than ``min_marrow_voxels`` voxels and does not touch the scan's
    border. Hence v is surely *kept* when ``C_B(v)`` has at least ``min_marrow_voxels``
    voxels or touches the scan's border (y/x faces, uncut z ends), and surely *filled* when
    ``C_A(v)`` is small and touches no face at all (cut or not): then ``C_K(v) ⊆ C_A(v)`` is
    a whole, small, interior component of the scan. Monotonicity makes these the voxels on
    which the answers for ``M_A`` and ``M_B`` agree; the slab's answer (``M_A``) is returned
    iff every marrow voxel of the core is one of them. ``C_A`` is not labelled separately:
    the ``M_B`` labels are joined through the (few) voxels of U by a graph search.

    Memory: about 5.3 bytes per slab voxel besides ``bone`` (a boolean copy and one int32
    label image, used for the bone and then for the marrow; label counts and look-ups run a
    few slices at a time), the core's result and 8 bytes per voxel of U.
    """
    c0, c1 = core
    if np.ndim(bone) != 3:
        raise ConfigError(f"despeckle_core: bone must be a (Z, Y, X) volume, got shape "
                          f"{np.shape(bone)}")
    nz = bone.shape[0]
    if not 0 <= c0 <= c1 <= nz:
        raise ConfigError(f"despeckle_core: core slices {c0}..{c1} outside the slab's {nz}")
    if valid is not None and np.shape(valid) != bone.shape:
        raise ConfigError(f"despeckle_core: valid has shape {np.shape(valid)}, bone "
                          f"{bone.shape}")
    out = np.array(bone, dtype=bool, copy=True)
    labels = np.empty(out.shape, dtype=np.int32)  # reused for bone, then marrow labels
    uvox = np.zeros(0, dtype=np.int64)  # flat indices of the uncertain islands' voxels
    if min_bone_voxels > 1 and out.any():
        n = ndimage.label(out, structure=np.ones((3, 3, 3), bool), output=labels)
        small = _label_sizes(labels, n) < min_bone_voxels
        small[0] = False
        unc = np.zeros(n + 1, dtype=bool)
        if cut_start or cut_end:
            unc[_face_labels(labels, cut_start, cut_end)] = True
            unc &= small
        if unc.any():
            if check and unc[_labels_present(labels[c0:c1], n)].any():
                logger.debug("despeckle_core: refused, a bone island cut by the slab end "
                             "meets the core")
                return None
            uvox = _uncertain_voxels(labels, unc, min_bone_voxels, cut_start, cut_end)
        # certain specks go now; the uncertain islands stay bone for the marrow labels (M_B)
        _set_where(out, labels, small & ~unc, False)
        removed = int(small.sum())
        logger.debug("despeckle_core: removed %d bone specks (%d uncertain)", removed,
                     int(unc.sum()))
        del small, unc
    result = out[c0:c1].copy()
    # the slab's answer removes the uncertain islands (those in the core only without check)
    in_core = (uvox >= c0 * out[0].size) & (uvox < c1 * out[0].size)
    result.reshape(-1)[uvox[in_core] - c0 * out[0].size] = False
    if min_marrow_voxels <= 1:
        return result
    # marrow with the uncertain islands as bone (M_B), labelled in place of the bone
    np.logical_not(out, out=out)
    if valid is not None:
        out &= valid
    n = ndimage.label(out, output=labels)
    del out
    sizes = _label_sizes(labels, n)
    sizes[0] = 0
    on_true, on_cut = _on_faces(labels, n, cut_start, cut_end)
    small = sizes < min_marrow_voxels
    if valid is not None and uvox.size:
        # island voxels without data are never marrow
        uvox_m = uvox[valid[np.unravel_index(uvox, labels.shape)]]
    else:
        uvox_m = uvox
    if uvox_m.size:
        filled, filled_u = _filled_through_islands(labels, n, uvox_m, sizes, on_true, on_cut,
                                                   min_marrow_voxels, cut_start, cut_end)
    else:
        filled = small & ~on_true & ~on_cut
        filled_u = np.zeros(0, dtype=bool)
    filled[0] = False
    if check and (cut_start or cut_end):
        sure = filled | ~small | on_true
        sure[0] = True
        undecided = _labels_present(labels[c0:c1], n) & ~sure
        if undecided.any():
            logger.debug("despeckle_core: refused, %d marrow components of the core are "
                         "undecided (%d of them touch a cut end)", int(undecided.sum()),
                         int((undecided & on_cut).sum()))
            return None
    _set_where(result, labels[c0:c1], filled, True)
    hit = (uvox_m >= c0 * labels[0].size) & (uvox_m < c1 * labels[0].size) & filled_u
    result.reshape(-1)[uvox_m[hit] - c0 * labels[0].size] = True
    logger.debug("despeckle_core: filled %d marrow pores", int(filled.sum()))
    return result


def _on_faces(labels: np.ndarray, n: int, cut_start: bool, cut_end: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per label (0 .. n): does its component touch a true face of the scan (y/x faces,
    uncut z ends), does it touch a cut z end?"""
    cut_faces = ([labels[0]] if cut_start else []) + ([labels[-1]] if cut_end else [])
    true_faces = [labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]] + (
        [labels[0]] if not cut_start else []) + ([labels[-1]] if not cut_end else [])
    on_true = np.zeros(n + 1, dtype=bool)
    on_cut = np.zeros(n + 1, dtype=bool)
    for face in true_faces:
        on_true[np.unique(face)] = True
    for face in cut_faces:
        on_cut[np.unique(face)] = True
    on_true[0] = on_cut[0] = False
    return on_true, on_cut


def _filled_through_islands(labels: np.ndarray, n: int, uvox_m: np.ndarray, sizes: np.ndarray,
                            on_true: np.ndarray, on_cut: np.ndarray, min_marrow_voxels: int,
                            cut_start: bool, cut_end: bool) -> tuple[np.ndarray, np.ndarray]:
    """M_A: the marrow components joined through the uncertain islands' voxels ``uvox_m``;
    which labels (0 .. n) and which of those voxels are filled pores."""
    nz = labels.shape[0]
    comp = _merged_components(labels, n, uvox_m)
    nc = int(comp.max()) + 1
    z, rem = np.divmod(uvox_m, labels[0].size)
    y, x = np.divmod(rem, labels.shape[2])
    u_true = (y == 0) | (y == labels.shape[1] - 1) | (x == 0) | (x == labels.shape[2] - 1)
    u_true |= ((z == 0) & (not cut_start)) | ((z == nz - 1) & (not cut_end))
    u_cut = ((z == 0) & cut_start) | ((z == nz - 1) & cut_end)
    node_size = np.concatenate([sizes, np.ones(uvox_m.size, dtype=np.int64)])
    size_a = np.bincount(comp, weights=node_size, minlength=nc)
    true_a = np.bincount(comp, weights=np.concatenate([on_true, u_true]), minlength=nc) > 0
    cut_a = np.bincount(comp, weights=np.concatenate([on_cut, u_cut]), minlength=nc) > 0
    filled_root = (size_a < min_marrow_voxels) & ~true_a & ~cut_a
    filled_node = filled_root[comp]
    return filled_node[: n + 1], filled_node[n + 1 :]
