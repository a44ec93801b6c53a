"""Z-buffer rasterization of projected triangles (numba kernels of :mod:`ctmorph.render`).

Prepared arrays in, buffers out; no validation, no logging. The public wrapper is
:func:`ctmorph.render.image.render_mesh`.

Conventions shared by the kernels and their slow oracles (``tests/test_render.py``):

- A vertex is ``(col, row, depth)`` in pixel units: pixel ``(i, j)`` (row, column) has its
  centre at ``(col, row) = (j + 0.5, i + 0.5)``. Smaller depth is nearer the viewer.
- A pixel is covered by a triangle when its centre lies inside or on the triangle (edge
  functions all of one sign, zero included); triangles of zero area are skipped. The signed
  area ``(x1 - x0)(y2 - y0) - (y1 - y0)(x2 - x0)`` gives the winding: with ``cull = 1``
  triangles of positive area are skipped (back faces of a closed marching-cubes surface, whose
  front faces have negative area in (col, row) coordinates), with ``cull = -1`` those of
  negative area, with ``cull = 0`` none.
- Depth and vertex attributes are interpolated linearly (orthographic projection) with the
  barycentric weights of the pixel centre.
- Of the triangles covering a pixel, the one with the smallest depth wins; an exact tie goes
  to the lower triangle index. This order is total, so the result does not depend on the
  order in which triangles are visited, hence not on the number of threads.

Parallelism: the image is cut into bands of rows; :func:`bin_triangles` lists, per band and in
increasing triangle index, the triangles whose row range meets the band; :func:`rasterize`
processes the bands in parallel, each writing only its own rows. :func:`resolve` then
interpolates the winning triangle's vertex attributes at each pixel centre, shades them and
averages blocks of pixels (anti-aliasing), in parallel over output rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["bin_triangles", "rasterize", "resolve"]


@njit(cache=True, nogil=True)
def _row_range(y0, y1, y2, height):  # pragma: no cover - compiled
    """First and one-past-last pixel row whose centre may lie in the triangle's row span."""
    lo = min(y0, min(y1, y2))
    hi = max(y0, max(y1, y2))
    r0 = max(0, int(np.ceil(lo - 0.5)))
    r1 = min(height, int(np.floor(hi - 0.5)) + 1)
    return r0, r1


@njit(cache=True, nogil=True)
def bin_triangles(verts, faces, height, band):  # pragma: no cover - compiled
    """Triangles per band of ``band`` image rows, in increasing triangle index.

    Parameters
    ----------
    verts : (V, 3) float64 ndarray
        ``(col, row, depth)`` of each vertex, pixel units.
    faces : (T, 3) int64 ndarray
        Vertex indices of each triangle.
    height : int
        Image height in pixels.
    band : int
        Rows per band; band ``b`` holds rows ``b * band .. (b + 1) * band - 1``.

    Returns
    -------
    start : (B + 1,) int64 ndarray
        Band ``b``'s triangles are ``index[start[b]:start[b + 1]]``.
    index : (N,) int64 ndarray
        Triangle indices, grouped by band.
    """
    n_bands = (height + band - 1) // band
    count = np.zeros(n_bands + 1, np.int64)
    n_tri = faces.shape[0]
    for t in range(n_tri):
        r0, r1 = _row_range(verts[faces[t, 0], 1], verts[faces[t, 1], 1],
                            verts[faces[t, 2], 1], height)
        if r1 <= r0:
            continue
        for b in range(r0 // band, (r1 - 1) // band + 1):
            count[b + 1] += 1
    for b in range(n_bands):
        count[b + 1] += count[b]
    index = np.empty(count[n_bands], np.int64)
    fill = count[:n_bands].copy()
    for t in range(n_tri):
        r0, r1 = _row_range(verts[faces[t, 0], 1], verts[faces[t, 1], 1],
                            verts[faces[t, 2], 1], height)
        if r1 <= r0:
            continue
        for b in range(r0 // band, (r1 - 1) // band + 1):
            index[fill[b]] = t
            fill[b] += 1
    return count, index


@njit(cache=True, nogil=True, parallel=True)
def rasterize(verts, faces, start, index, band, cull, depth,
              owner):  # pragma: no cover - compiled
    """Nearest triangle and its depth at every pixel centre.

    Parameters
    ----------
    verts : (V, 3) float64 ndarray
        ``(col, row, depth)`` of each vertex, pixel units.
    faces : (T, 3) int64 ndarray
        Vertex indices of each triangle.
    start, index : int64 ndarrays
        The bands' triangle lists of :func:`bin_triangles` for the same ``band``.
    band : int
        Rows per band.
    cull : int
        Skip triangles whose signed area has this sign (0: draw all; module docstring).
    depth : (H, W) float64 ndarray
        Filled with ``inf`` by the caller; receives the depth of the winning triangle.
    owner : (H, W) int64 ndarray
        Filled with ``-1`` by the caller; receives the winning triangle's index.
    """
    height, width = depth.shape
    n_bands = start.shape[0] - 1
    for b in prange(n_bands):
        row_lo = b * band
        row_hi = min(height, row_lo + band)
        for k in range(start[b], start[b + 1]):
            t = index[k]
            a, c, e = faces[t, 0], faces[t, 1], faces[t, 2]
            x0, y0, d0 = verts[a, 0], verts[a, 1], verts[a, 2]
            x1, y1, d1 = verts[c, 0], verts[c, 1], verts[c, 2]
            x2, y2, d2 = verts[e, 0], verts[e, 1], verts[e, 2]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if area == 0.0 or area * cull > 0.0:
                continue
            r0, r1 = _row_range(y0, y1, y2, height)
            r0 = max(r0, row_lo)
            r1 = min(r1, row_hi)
            c0 = max(0, int(np.ceil(min(x0, min(x1, x2)) - 0.5)))
            c1 = min(width, int(np.floor(max(x0, max(x1, x2)) - 0.5)) + 1)
            for i in range(r0, r1):
                py = i + 0.5
                for j in range(c0, c1):
                    px = j + 0.5
                    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
                    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
                    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
                    if area > 0.0:
                        if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                            continue
                    elif w0 > 0.0 or w1 > 0.0 or w2 > 0.0:
                        continue
                    z = (w0 * d0 + w1 * d1 + w2 * d2) / area
                    if z < depth[i, j] or (z == depth[i, j] and t < owner[i, j]):
                        depth[i, j] = z
                        owner[i, j] = t


@njit(cache=True, nogil=True)
def _shade_point(nz, ny, nx, ao, hl, light, params):  # pragma: no cover - compiled
    """RGB of one surface point (formula in :func:`resolve`)."""
    norm = np.sqrt(nz * nz + ny * ny + nx * nx)
    if norm <= 0.0:
        norm = 1.0
    lambert = (nz * light[0] + ny * light[1] + nx * light[2]) / norm
    lambert = max(lambert, 0.0)
    occl = 1.0 - params[2] * (1.0 - min(max(ao, 0.0), 1.0))
    intensity = (params[0] + params[1] * lambert) * occl
    h = min(max(hl, 0.0), 1.0)
    r = g = b = 0.0
    for k in range(3):
        bone = params[4 + k] * intensity
        faded = params[7 + k] * intensity
        faded = faded + params[3] * (1.0 - faded)
        v = min(max(h * bone + (1.0 - h) * faded, 0.0), 1.0)
        if k == 0:
            r = v
        elif k == 1:
            g = v
        else:
            b = v
    return r, g, b


@njit(cache=True, nogil=True, parallel=True)
def resolve(verts, faces, attrs, owner, factor, light, params, transparent,
            out):  # pragma: no cover - compiled
    """Shade the visible surface at every pixel centre and average ``factor`` x ``factor``
    blocks into output pixels (anti-aliasing), over a white or transparent background.

    Per pixel of the fine grid, the winning triangle's vertex attributes are interpolated at
    the pixel centre with its barycentric weights (``w_k`` = edge function / signed area) and
    shaded: with ``p = params``, ``n`` the normal, ``l`` the light,
    ``intensity = (p[0] + p[1] * max(0, n·l / |n|)) * (1 - p[2] * (1 - clip(ao)))``;
    ``bone = p[4:7] * intensity``; ``faded = f + p[3] * (1 - f)`` with ``f = p[7:10] *
    intensity``; ``rgb = clip(h * bone + (1 - h) * faded)`` with ``h = clip(highlight)``.

    Parameters
    ----------
    verts : (V, 3) float64 ndarray
        ``(col, row, depth)`` of each vertex on the fine grid, pixel units.
    faces : (T, 3) int64 ndarray
        Vertex indices of each triangle.
    attrs : (V, 5) float64 ndarray
        Normal ``(z, y, x)``, ambient-occlusion factor and highlight flag of each vertex.
    owner : (H * factor, W * factor) int64 ndarray
        Winning triangle per fine pixel (``-1``: background), from :func:`rasterize`.
    factor : int
        Fine pixels per output pixel along each axis.
    light : (3,) float64 ndarray
        Unit vector ``(z, y, x)`` towards the light.
    params : (10,) float64 ndarray
        Ambient, diffuse, occlusion strength, fade, bone RGB, faded RGB.
    transparent : bool
        Background alpha 0 (colour averaged over the covered fine pixels only) instead of
        opaque white (colours averaged with white for the uncovered ones).
    out : (H, W, 4) float64 ndarray
        Receives RGBA in [0, 1]. Output rows are processed in parallel, each writing only its
        own row.
    """
    height, width = out.shape[0], out.shape[1]
    n_sub = factor * factor
    for oi in prange(height):
        for oj in range(width):
            acc_r = acc_g = acc_b = 0.0
            count = 0
            for si in range(factor):
                i = oi * factor + si
                py = i + 0.5
                for sj in range(factor):
                    j = oj * factor + sj
                    t = owner[i, j]
                    if t < 0:
                        continue
                    px = j + 0.5
                    a, c, e = faces[t, 0], faces[t, 1], faces[t, 2]
                    x0, y0 = verts[a, 0], verts[a, 1]
                    x1, y1 = verts[c, 0], verts[c, 1]
                    x2, y2 = verts[e, 0], verts[e, 1]
                    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                    w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
                    w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
                    w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
                    r, g, b = _shade_point(
                        w0 * attrs[a, 0] + w1 * attrs[c, 0] + w2 * attrs[e, 0],
                        w0 * attrs[a, 1] + w1 * attrs[c, 1] + w2 * attrs[e, 1],
                        w0 * attrs[a, 2] + w1 * attrs[c, 2] + w2 * attrs[e, 2],
                        w0 * attrs[a, 3] + w1 * attrs[c, 3] + w2 * attrs[e, 3],
                        w0 * attrs[a, 4] + w1 * attrs[c, 4] + w2 * attrs[e, 4],
                        light, params)
                    acc_r += r
                    acc_g += g
                    acc_b += b
                    count += 1
            if transparent:
                if count > 0:
                    out[oi, oj, 0] = acc_r / count
                    out[oi, oj, 1] = acc_g / count
                    out[oi, oj, 2] = acc_b / count
                else:
                    out[oi, oj, 0] = out[oi, oj, 1] = out[oi, oj, 2] = 1.0
                out[oi, oj, 3] = count / n_sub
            else:
                blank = n_sub - count
                out[oi, oj, 0] = (acc_r + blank) / n_sub
                out[oi, oj, 1] = (acc_g + blank) / n_sub
                out[oi, oj, 2] = (acc_b + blank) / n_sub
                out[oi, oj, 3] = 1.0
