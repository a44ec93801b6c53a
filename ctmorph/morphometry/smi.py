"""Structure model index (SMI) and the concave surface fraction.

Public function: :func:`smi`. Mesh work is vectorised numpy on a scikit-image marching-cubes
surface; there is no numba kernel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes

from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing
from .arrays import check_chunk_slices, prepare_masks
from .zsource import ArraySource, ZSource

__all__ = ["smi", "smi_chunked", "surface_area_derivative"]

log = logging.getLogger(__name__)

#: |dA/dr| / A (per voxel size) below which a vertex's neighbourhood counts as flat.
_FLAT_CURVATURE = 1e-3
#: Owned voxels of smoothed field meshed at once. A slab's field, mesh and per-triangle
#: work cost ~25 B per field voxel (measured: 117 MB for 4.9 M voxels of a dense sponge).
_CHUNK_VOXELS = 4_000_000
#: Triangles handled at once by the per-triangle steps (their temporaries cost ~300 B each,
#: ~20 MB per batch).
_FACE_BATCH = 1 << 16


def _face_batches(n: int) -> list[slice]:
    """Slices of ``_FACE_BATCH`` triangles covering ``n``; per-triangle arithmetic does not
    depend on the batching, so neither do the results."""
    return [slice(s, min(s + _FACE_BATCH, n)) for s in range(0, n, _FACE_BATCH)]


def _mesh_sums(
    bone: np.ndarray, voi: np.ndarray, a: int, shape: tuple[int, int, int], c0: int, c1: int,
    halo: int, smooth: float, sp: np.ndarray,
) -> tuple[float, float, float, float, float, int] | None:
    """BS, dBS/dr, the convex and concave dBS/dr and the concave area of the triangles in
    the marching cubes ``[c0, c1)`` (z, of the edge-padded field) and of the vertices with
    z in ``[c0, c1)``; None when that part of the field has no surface.

    ``bone`` and ``voi`` are slices ``[a, a + len)`` of the cropped box of ``shape``; they
    must hold the box slices of the field rows ``[c0 - halo, c1 + 1 + halo)`` (row k is box
    slice k − 1, clipped to the box: the box is edge padded at both ends)."""
    nzf = shape[0] + 2
    r0, r1 = max(0, c0 - halo), min(nzf, c1 + 1 + halo)  # field slices of this slab
    rows = np.clip(np.arange(r0, r1) - 1, 0, shape[0] - 1) - a
    field = np.pad(bone[rows].astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="edge")
    if smooth > 0:
        field = ndimage.gaussian_filter(field, smooth, mode="nearest")
    if not (field.min() < 0.5 < field.max()):
        return None
    verts, faces, grad_normals, _values = marching_cubes(field, level=0.5)
    del field, _values
    verts = verts.astype(np.float64)
    verts[:, 0] += r0
    # the cube a triangle lies in, and the slice a vertex lies on (the field's last plane
    # belongs to the last cube)
    cube_z = np.empty(len(faces), dtype=np.float64)
    for sl in _face_batches(len(faces)):
        cube_z[sl] = np.minimum(np.floor(verts[faces[sl], 0].min(axis=1)), nzf - 2)
    vz = np.minimum(np.floor(verts[:, 0]), nzf - 2)
    verts *= sp
    normals = _vertex_normals(verts, faces)
    flip = np.einsum("ij,ij->", normals, grad_normals / sp) < 0
    del grad_normals
    if flip:
        faces = faces[:, ::-1]
        normals = -normals
    area, d_area = surface_area_derivative(verts, faces, normals)
    # VOI triangles: the voxel nearest to the centroid is in the VOI
    # (a triangle whose nearest slice is outside [a, a + len) is neither owned nor next to an
    # owned vertex: the rows reach >= 3 slices beyond both)
    lim = np.array([a, 0, 0]), np.array([a + voi.shape[0], shape[1], shape[2]])
    keep = np.zeros(len(faces), dtype=bool)
    for sl in _face_batches(len(faces)):
        centroid = verts[faces[sl]].mean(axis=1)
        near = np.floor(centroid / sp + 0.5).astype(np.int64) - 1
        inside_img = np.all((near >= lim[0]) & (near < lim[1]), axis=1)
        idx = near[inside_img]
        part = np.zeros(len(near), dtype=bool)
        part[inside_img] = voi[idx[:, 0] - a, idx[:, 1], idx[:, 2]]
        keep[sl] = part
    del centroid, near, idx, part
    own_tri = keep & (cube_z >= c0) & (cube_z < c1)
    # local area change per vertex: one third of each incident VOI triangle's A and dA/dr
    # (np.add.at in triangle order: the sums of one np.bincount over all kept triangles)
    v_area = np.zeros(len(verts))
    v_darea = np.zeros(len(verts))
    for sl in _face_batches(len(faces)):
        k = keep[sl]
        idx = faces[sl][k].ravel()
        np.add.at(v_area, idx, np.repeat(area[sl][k] / 3.0, 3))
        np.add.at(v_darea, idx, np.repeat(d_area[sl][k] / 3.0, 3))
    own_v = (vz >= c0) & (vz < c1)
    concave = own_v & (v_darea < -_FLAT_CURVATURE / float(sp.min()) * v_area)
    return (float(area[own_tri].sum()), float(d_area[own_tri].sum()),
            float(v_darea[own_v & (v_darea > 0)].sum()),
            float(v_darea[own_v & (v_darea < 0)].sum()),
            float(v_area[concave].sum()), int(own_tri.sum()))


def surface_area_derivative(
    verts: np.ndarray, faces: np.ndarray, normals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Area of each triangle and its derivative when every vertex moves along its normal.

    Parameters
    ----------
    verts : (V, 3) ndarray of float
        Vertex positions (mm).
    faces : (F, 3) ndarray of int
        Triangles as vertex indices.
    normals : (V, 3) ndarray of float
        Unit vertex normals; the surface is displaced as ``verts + r * normals``.

    Returns
    -------
    area : (F,) ndarray of float
        Triangle areas (mm²).
    d_area : (F,) ndarray of float
        ``dA/dr`` at ``r = 0`` (mm), the exact limit of Hildebrand & Rüegsegger's finite
        dilation: with ``X(r) = (b − a + r(n_b − n_a)) × (c − a + r(n_c − n_a))`` and
        ``A = |X| / 2``, ``dA/dr = X̂ · [(n_b − n_a) × (c − a) + (b − a) × (n_c − n_a)] / 2``.
        On a smooth closed surface it sums to ``∫ (κ₁ + κ₂) dA``.
    """
    area = d_area = None
    for sl in _face_batches(len(faces)) or [slice(0, 0)]:
        f = faces[sl]
        a, b, c = (verts[f[:, k]] for k in range(3))
        na, nb, nc = (normals[f[:, k]] for k in range(3))
        x = np.cross(b - a, c - a)
        norm = np.linalg.norm(x, axis=1)
        dx = np.cross(nb - na, c - a) + np.cross(b - a, nc - na)
        del a, b, c, na, nb, nc
        with np.errstate(invalid="ignore", divide="ignore"):
            da = np.where(norm > 0, np.einsum("ij,ij->i", x, dx) / (2.0 * norm), 0.0)
        area = _put(area, sl, 0.5 * norm, len(faces))
        d_area = _put(d_area, sl, da, len(faces))
    return area, d_area


def _put(out: np.ndarray | None, sl: slice, value: np.ndarray, n: int) -> np.ndarray:
    """Store one batch's ``value`` in ``out[sl]``, allocating ``out`` (``n`` rows, the batch's
    dtype) at the first batch."""
    if out is None:
        out = np.empty((n, *value.shape[1:]), dtype=value.dtype)
    out[sl] = value
    return out


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals following the winding of ``faces``."""
    sums = [np.zeros(len(verts)) for _ in range(3)]
    for sl in _face_batches(len(faces)):
        a, b, c = (verts[faces[sl, k]] for k in range(3))
        fn = np.cross(b - a, c - a)  # length = 2 * area
        idx = faces[sl].ravel()
        for m in range(3):
            # np.add.at adds in index order, like one np.bincount over all triangles: the
            # batches change no sum
            np.add.at(sums[m], idx, np.repeat(fn[:, m], 3))
    vn = np.stack(sums, axis=1)
    del sums
    length = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.where(length > 0, length, 1.0)


def smi(
    bone: np.ndarray,
    voi: np.ndarray | None = None,
    *,
    spacing: float | Sequence[float],
    smooth: float = 1.0,
) -> dict[str, float]:
    """Structure model index (SMI), its convex/concave parts and the concave fraction.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    voi : (Z, Y, X) ndarray of bool, optional
        Volume of interest; ``None`` means the whole volume.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    smooth : float
        Gaussian sigma in voxels (each axis) applied to the bone indicator before the surface
        is extracted (0 triangulates the binary image; see Notes).

    Returns
    -------
    dict of str to float
        ``"SMI"``
            ``6 · BV · (dBS/dr) / BS²`` (dimensionless): 0 plates, 3 rods, 4 spheres;
            negative for concave structures.
        ``"SMI+"``, ``"SMI-"``
            The same with ``dBS/dr`` summed over the convex (local ``dA/dr > 0``) or concave
            (``dA/dr < 0``) mesh vertices only; ``SMI = SMI+ + SMI-`` and ``SMI- <= 0``.
        ``"concave_fraction"``
            Fraction (0-1) of BS around vertices whose local area change ``dA/dr`` is
            negative (Salmon et al. 2015); a vertex counts as flat, neither convex nor
            concave, when ``|dA/dr| / A`` is below 10⁻³ per voxel size.
        ``"BS.mesh"``
            BS of the smoothed surface inside the VOI in mm² (the one SMI uses).
        ``"dBS/dr"``
            Its derivative under outward normal displacement, in mm.

    Raises
    ------
    ConfigError
        On invalid masks, spacing or ``smooth``.
    SegmentationError
        If the VOI is empty or holds no bone surface.

    Notes
    -----
    Hildebrand & Rüegsegger (1997) define ``SMI = 6 · BV · BS' / BS²`` with ``BS'`` the
    derivative of the bone surface area under an infinitesimal dilation of the structure:
    ideal plates (``BS' = 0``) give 0, cylinders 3 and spheres 4. Here the surface is the
    marching-cubes iso-surface at level ½ (Lorensen & Cline 1987, via scikit-image) of the
    bone indicator smoothed with a Gaussian of ``smooth`` voxels; the raw voxel staircase
    has curvature at every voxel edge and biases ``BS'``. The image is edge-padded first so
    that the image border is not a surface. Every vertex is moved along its area-weighted
    normal (pointing into marrow) and ``BS'`` is the exact derivative of the triangle areas
    (:func:`surface_area_derivative`), i.e. the limit of the finite dilation of the original
    method.

    **VOI.** As for BS/BV, a triangle belongs to the VOI when the voxel nearest to its
    centroid does; bone outside the VOI is context (it shapes the surface and the normals)
    but its surface is not counted, and the VOI wall creates no surface. BV is the voxel
    count of bone in the VOI. A plate-like structure measured well inside a VOI therefore
    has SMI ≈ 0 even though a finite L × L × t plate with its rim has SMI ≈ 6πt/L > 0
    (L ≫ t).

    **Concavity.** Concave surface (negative mean curvature, e.g. the wall of a cavity or the
    fillets where trabeculae join in a dense network) contributes negatively to ``BS'``,
    which is why real bone can have SMI < 0 and why SMI is not a rod/plate ratio (Salmon et
    al. 2015). Each triangle's ``A`` and ``dA/dr`` are shared in thirds among its vertices;
    the sign of the summed ``dA/dr`` at a vertex (its discrete mean curvature) classifies the
    vertex's share of BS, giving ``concave_fraction`` and the split ``SMI+`` / ``SMI-``
    (normalised like SMI). On surfaces that are flat or only weakly curved compared with the
    voxel size (plates, rods of radius ≳ 10 voxels) the residual voxel-scale ripple of the
    mesh makes this classification noisy: tilted plates report a concave fraction near 0.5
    with ``SMI+ ≈ −SMI-`` small, while SMI itself stays ≈ 0.

    References
    ----------
    Hildebrand T, Rüegsegger P (1997). Quantification of bone microarchitecture with the
    structure model index. Comput Methods Biomech Biomed Engin 1:15-23.

    Salmon PL, Ohlsson C, Shefelbine SJ, Doube M (2015). Structure model index does not
    measure rods and plates in trabecular bone. Front Endocrinol 6:162.

    Lorensen WE, Cline HE (1987). Marching cubes: a high resolution 3D surface construction
    algorithm. Comput Graph 21:163-169.
    """
    bone, voi, sp = prepare_masks(bone, voi, spacing)
    _check_smooth(smooth)
    return smi_chunked(ArraySource(bone, voi), spacing=sp, smooth=smooth)


def _check_smooth(smooth: float) -> None:
    if not (math.isfinite(smooth) and smooth >= 0):
        raise ConfigError(f"smooth must be a non-negative sigma in voxels, got {smooth!r}")


def smi_chunked(
    src: ZSource,
    *,
    spacing: float | Sequence[float],
    smooth: float = 1.0,
    chunk_slices: int | None = None,
) -> dict[str, float]:
    """:func:`smi` of a :class:`~ctmorph.morphometry.zsource.ZSource`, read slab by slab.

    Parameters
    ----------
    src : ZSource
        Bone and VOI (the marrow space is not used).
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    smooth : float
        Gaussian sigma in voxels (see :func:`smi`).
    chunk_slices : int, optional
        At most this many owned slices per slab; the default, and the cap, is the mesh budget
        ``max(8, 4 M voxels // plane)`` of the cropped box. Each slab is read with a halo of
        ``ceil(4·smooth) + 3`` slices on either side (plus one), so a slab's field holds
        ``step + 2·halo + 1`` slices; its mesh costs ~25 B per field voxel.

    Returns
    -------
    dict of str to float
        As :func:`smi`. With the default slabs the result is bitwise that of :func:`smi`;
        other slab cuts change it by float rounding only (float32 vertex positions in
        slab-local z: ~1e-7 relative on BS, ~1e-4 on SMI, see the tests).

    Raises
    ------
    ConfigError
        On invalid spacing, ``smooth`` or ``chunk_slices``, or a source with no voxel.
    SegmentationError
        If the VOI is empty or holds no bone surface.
    """
    sp = normalize_spacing(spacing, 3)
    _check_smooth(smooth)
    chunk_slices = check_chunk_slices(chunk_slices)
    shape = tuple(int(n) for n in src.shape)
    if min(shape) < 1:
        raise ConfigError(f"bone is empty, got shape {shape}")
    vbox = src.voi_box()  # SegmentationError when empty
    # the VOI box grown by the Gaussian's reach (+2), clipped to the image: "the box"
    m = int(4.0 * smooth + 0.5) + 2
    zb, ys, xs = (slice(max(vbox[2 * ax] - m, 0), min(vbox[2 * ax + 1] + m, shape[ax]))
                  for ax in range(3))
    bshape = (zb.stop - zb.start, ys.stop - ys.start, xs.stop - xs.start)

    # The surface is built slab by slab along z (bounded memory on big VOIs). Each triangle
    # lies in one marching cube and belongs to the slab owning that cube; each vertex belongs
    # to the slab owning its z. A slab's field and mesh are computed with a halo of
    # ceil(4 smooth) + 3 slices, which holds the Gaussian's support and the one-ring of
    # triangles around every owned vertex, so every owned triangle, normal and vertex sum is
    # the one of the whole-box mesh (up to float rounding of the z offset).
    nzf = bshape[0] + 2  # slices of the edge-padded field
    plane = (bshape[1] + 2) * (bshape[2] + 2)
    step = max(8, _CHUNK_VOXELS // plane)
    if chunk_slices is not None:
        step = min(step, chunk_slices)
    halo = int(math.ceil(4.0 * smooth)) + 3
    sp_arr = np.asarray(sp, dtype=np.float64)
    n_bone = 0
    bs = d_bs = v_pos = v_neg = v_conc = 0.0
    n_tri = 0
    surface = False
    for c0 in range(0, nzf - 1, step):
        c1 = min(nzf - 1, c0 + step)  # owned cubes [c0, c1) of the padded field
        # box slices of the field rows [c0 - halo, c1 + 1 + halo) (row k = box slice k - 1)
        a = min(max(c0 - halo - 1, 0), bshape[0] - 1)
        b = max(min(c1 + halo, bshape[0]), a + 1)
        blk = src.read(zb.start + a, zb.start + b)
        bone = np.ascontiguousarray(blk.bone[:, ys, xs])
        voi = np.ascontiguousarray(blk.voi[:, ys, xs])
        del blk
        # bone in the VOI, counted on box slices [c0, c1) (each box slice once)
        o0, o1 = min(c0, bshape[0]), min(c1, bshape[0])
        n_bone += int(np.count_nonzero(bone[o0 - a:o1 - a] & voi[o0 - a:o1 - a]))
        part = _mesh_sums(bone, voi, a, bshape, c0, c1, halo, smooth, sp_arr)
        del bone, voi
        if part is None:
            continue
        surface = True
        bs += part[0]
        d_bs += part[1]
        v_pos += part[2]
        v_neg += part[3]
        v_conc += part[4]
        n_tri += part[5]
    if n_bone == 0:
        raise SegmentationError("no bone in the VOI: SMI is undefined")
    if not surface:
        raise SegmentationError("no bone surface in the VOI: SMI is undefined")
    if bs <= 0:
        raise SegmentationError("no bone surface in the VOI: SMI is undefined")
    bv = n_bone * sp[0] * sp[1] * sp[2]
    scale = 6.0 * bv / bs**2
    result = {
        "SMI": scale * d_bs,
        "SMI+": scale * v_pos,
        "SMI-": scale * v_neg,
        "concave_fraction": v_conc / bs,
        "BS.mesh": bs,
        "dBS/dr": d_bs,
    }
    log.debug("SMI %.4f from %d triangles in the VOI", result["SMI"], n_tri)
    return result
