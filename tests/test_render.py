"""Bone renderings (ctmorph.render) against analytic truth, and the raster kernels against slow
pure-Python oracles."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ctmorph._kernels.raster import bin_triangles, rasterize, resolve
from ctmorph._kernels.sample import sample_trilinear
from ctmorph.errors import ConfigError
from ctmorph.phantoms import ball, random_trabecular
from ctmorph.render import CutPlane, bone_mesh, render_bone, render_surface, save_png, turntable
from ctmorph.render.camera import camera_axes, fit_camera, project, view_angles
from ctmorph.render.scalebar import ROUND_LENGTHS_MM, bar_label
from ctmorph.render.shade import shading_params

# --------------------------------------------------------------------------- kernel oracles


def _edges(p, x0, y0, x1, y1, x2, y2):
    """Edge functions of a pixel centre ``p``, written as the kernel writes them."""
    px, py = p
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    return w0, w1, w2


def slow_rasterize(verts, faces, height, width, cull):
    """Every pixel against every triangle, in triangle order, strictly nearer replaces."""
    depth = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int64)
    for i in range(height):
        for j in range(width):
            for t, (a, b, c) in enumerate(faces):
                x0, y0, d0 = verts[a]
                x1, y1, d1 = verts[b]
                x2, y2, d2 = verts[c]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if area == 0.0 or area * cull > 0.0:
                    continue
                w = _edges((j + 0.5, i + 0.5), x0, y0, x1, y1, x2, y2)
                if (area > 0 and min(w) < 0) or (area < 0 and max(w) > 0):
                    continue
                z = (w[0] * d0 + w[1] * d1 + w[2] * d2) / area
                if z < depth[i, j]:
                    depth[i, j], owner[i, j] = z, t
    return depth, owner


def slow_interpolate(verts, faces, attrs, owner):
    out = np.zeros(owner.shape + (attrs.shape[1],))
    for (i, j), t in np.ndenumerate(owner):
        if t < 0:
            continue
        (x0, y0, _), (x1, y1, _), (x2, y2, _) = verts[faces[t]]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        w = np.array(_edges((j + 0.5, i + 0.5), x0, y0, x1, y1, x2, y2)) / area
        out[i, j] = w @ attrs[faces[t]]
    return out


def slow_shade(v, light, p):
    """The shading formula of ``shading_params`` on (..., 5) attributes, in numpy."""
    n = v[..., :3]
    norm = np.linalg.norm(n, axis=-1)
    lambert = np.maximum(np.einsum("...k,k->...", n, light) / np.where(norm > 0, norm, 1), 0)
    intensity = (p[0] + p[1] * lambert) * (1 - p[2] * (1 - np.clip(v[..., 3], 0, 1)))
    h = np.clip(v[..., 4], 0, 1)[..., None]
    faded = p[7:10] * intensity[..., None]
    faded = faded + p[3] * (1 - faded)
    return np.clip(h * p[4:7] * intensity[..., None] + (1 - h) * faded, 0, 1)


def slow_resolve(verts, faces, attrs, owner, factor, light, params, transparent):
    rgb = slow_shade(slow_interpolate(verts, faces, attrs, owner), light, params)
    cov = owner >= 0
    h, w = owner.shape[0] // factor, owner.shape[1] // factor
    rgb = np.where(cov[..., None], rgb, 0.0).reshape(h, factor, w, factor, 3).sum(axis=(1, 3))
    count = cov.reshape(h, factor, w, factor).sum(axis=(1, 3))[..., None]
    out = np.empty((h, w, 4))
    if transparent:
        out[..., :3] = np.where(count > 0, rgb / np.maximum(count, 1), 1.0)
        out[..., 3] = count[..., 0] / factor**2
    else:
        out[..., :3] = (rgb + factor**2 - count) / factor**2
        out[..., 3] = 1.0
    return out


def _random_triangles(seed, n_tri=25, height=23, width=31):
    rng = np.random.default_rng(seed)
    n_v = 2 * n_tri
    # coordinates on a 1/4-pixel grid: vertices and edges through pixel centres, exact ties
    verts = np.column_stack([rng.integers(-8, 4 * width + 8, n_v) / 4.0,
                             rng.integers(-8, 4 * height + 8, n_v) / 4.0,
                             rng.integers(0, 6, n_v) / 2.0])
    faces = rng.integers(0, n_v, (n_tri, 3)).astype(np.int64)
    faces[-3:] = faces[:3]  # duplicates: equal depths everywhere, the lower index must win
    faces[-4] = faces[0, [0, 0, 1]]  # a degenerate triangle
    return verts, faces, height, width


def _kernel_raster(verts, faces, height, width, band, cull):
    start, index = bin_triangles(verts, faces, height, band)
    depth = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int64)
    rasterize(verts, faces, start, index, band, cull, depth, owner)
    return depth, owner


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("band", [1, 5, 64])
@pytest.mark.parametrize("cull", [0, 1, -1])
def test_rasterize_equals_slow_reference(seed, band, cull):
    verts, faces, h, w = _random_triangles(seed)
    depth, owner = _kernel_raster(verts, faces, h, w, band, cull)
    ref_depth, ref_owner = slow_rasterize(verts, faces, h, w, cull)
    np.testing.assert_array_equal(owner, ref_owner)
    np.testing.assert_array_equal(depth, ref_depth)
    assert (owner >= 0).sum() > 50  # the sets do cover pixels


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("transparent", [False, True])
def test_resolve_equals_slow_reference(seed, factor, transparent):
    verts, faces, _, _ = _random_triangles(seed, height=24, width=30)
    h, w = 24, 30
    _, owner = _kernel_raster(verts, faces, h, w, 4, 0)
    rng = np.random.default_rng(seed)
    attrs = np.column_stack([rng.standard_normal((len(verts), 3)),
                             rng.uniform(-0.2, 1.2, (len(verts), 2))])
    light = np.array([0.6, -0.48, 0.64])
    out = np.empty((h // factor, w // factor, 4))
    resolve(verts, faces, attrs, owner, factor, light, shading_params(), transparent, out)
    ref = slow_resolve(verts, faces, attrs, owner, factor, light, shading_params(),
                       transparent)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_trilinear_sampling_equals_map_coordinates(dtype):
    rng = np.random.default_rng(5)
    volume = rng.standard_normal((7, 9, 6)).astype(dtype)
    # inside, on voxel centres, and up to two voxels outside
    points = np.vstack([rng.uniform(-2, 10, (400, 3)), rng.integers(0, 6, (20, 3))])
    out = np.empty(len(points))
    sample_trilinear(volume, points.astype(np.float64), out)
    ref = ndimage.map_coordinates(volume.astype(np.float64), points.T, order=1,
                                  mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)


def test_back_face_culling_changes_nothing_on_a_closed_bone_mesh():
    # the wrapper culls (cull = 1) for speed; on a closed marching-cubes surface the nearest
    # triangle at every pixel is a front face, so the picture must be the same without it
    mesh = bone_mesh(random_trabecular((40, 36, 32), bv_tv=0.3, scale=2.0, seed=4), 0.01)
    for view in ("oblique", "lateral", (200.0, -30.0)):
        cam = fit_camera(mesh.vertices, camera_axes(*view_angles(view)), width_px=240)
        verts = project(cam, mesh.vertices)
        owners = [_kernel_raster(verts, mesh.faces, cam.height_px, cam.width_px, 16, cull)[1]
                  for cull in (0, 1)]
        np.testing.assert_array_equal(owners[0], owners[1])


def test_bins_hold_each_triangle_once_per_band_in_index_order():
    verts, faces, h, _ = _random_triangles(7)
    start, index = bin_triangles(verts, faces, h, 4)
    for b in range(len(start) - 1):
        band = index[start[b]:start[b + 1]]
        assert np.all(np.diff(band) > 0)


# --------------------------------------------------------------------------- geometry

SP = 0.01  # mm


@pytest.fixture(scope="module")
def ball_mesh():
    # radius 25 voxels: the voxel staircase is ±0.5 voxel locally but its mean radius is 25,
    # and smoothing at sigma 0.8 moves the 0.5 level of a sphere inward by about sigma²/r =
    # 0.03 voxel (0.2 % of the disc area); pixel-centre sampling of a disc of ~100 px radius
    # errs by far less than 1 %. The 2 % tolerance is mostly margin for the staircase.
    return bone_mesh(ball(64, 25), SP, ao=False)


def _luminance(rgba):
    return rgba[..., :3].astype(float) @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("view", ["top", "anterior", (123.0, -40.0)])
def test_sphere_renders_as_disc_of_its_area(ball_mesh, view):
    r = render_surface(ball_mesh, view=view, width_px=240, background="transparent",
                       supersample=1)
    expected = math.pi * (25 * SP / r.pixel_mm) ** 2
    area = (r.rgba[..., 3] > 0).sum()
    assert area == pytest.approx(expected, rel=0.02)
    # anti-aliased: the summed coverage is the area too
    r2 = render_surface(ball_mesh, view=view, width_px=240, background="transparent")
    assert r2.rgba[..., 3].sum() / 255.0 == pytest.approx(expected, rel=0.02)


def test_lit_side_is_brighter(ball_mesh):
    r = render_surface(ball_mesh, view="anterior", width_px=200)
    lum = _luminance(r.rgba)
    bone = r.rgba[..., 3] > 0
    bone &= lum < 250  # the sphere, not the white background
    h, w = bone.shape
    upper_left = bone.copy()
    upper_left[h // 2:] = False
    upper_left[:, w // 2:] = False
    lower_right = bone.copy()
    lower_right[: h // 2] = False
    lower_right[:, : w // 2] = False
    # the light comes from the viewer's upper left
    assert lum[upper_left].mean() > lum[lower_right].mean() + 40


def test_cube_silhouette_is_its_projected_square():
    # 0.4 mm cube from anisotropic voxels (dz = 2 dx): 20 x 40 x 40 voxels
    mask = np.zeros((30, 60, 60), dtype=bool)
    mask[5:25, 10:50, 10:50] = True
    side = 0.4
    for view in ("anterior", "lateral", "top"):
        r = render_bone(mask, (0.02, SP, SP), view=view, width_px=200, ao=False,
                        background="transparent", supersample=1)
        cov = r.rgba[..., 3] > 0
        rows, cols = np.nonzero(cov)
        n = side / r.pixel_mm
        assert abs(cols.max() - cols.min() + 1 - n) <= 1, view
        assert abs(rows.max() - rows.min() + 1 - n) <= 1, view
        assert cov.sum() == pytest.approx(n * n, rel=0.01), view


def test_thin_plate_edge_on_is_as_wide_as_thick_and_face_on_covers_its_area():
    # a plate 4 voxels (0.04 mm) thick in z, 0.4 x 0.4 mm in y, x
    mask = np.zeros((20, 60, 60), dtype=bool)
    mask[8:12, 10:50, 10:50] = True
    pixel_mm = 0.004
    edge = render_bone(mask, SP, view="anterior", pixel_mm=pixel_mm, width_px=160,
                       height_px=60, ao=False, background="transparent", supersample=1)
    column = edge.rgba[:, 80, 3] > 0
    assert abs(column.sum() - 0.04 / pixel_mm) <= 1
    face = render_bone(mask, SP, view="top", pixel_mm=pixel_mm, width_px=160, height_px=160,
                       ao=False, background="transparent", supersample=1)
    assert (face.rgba[..., 3] > 0).sum() == pytest.approx((0.4 / pixel_mm) ** 2, rel=0.01)


def test_cut_face_is_capped_flat():
    # a ball cut through its centre, seen from the removed side: a full, evenly lit disc
    mask = ball(64, 25)
    c = 31.5 * SP
    cut = CutPlane((c, c, c), (0.0, 0.0, 1.0))  # removes x > centre
    r = render_bone(mask, SP, view="lateral", width_px=240, cut=cut, ao=False,
                    background="transparent", supersample=1)
    cov = r.rgba[..., 3] > 0
    assert cov.sum() == pytest.approx(math.pi * (25 * SP / r.pixel_mm) ** 2, rel=0.02)
    # inside 0.8 of the radius (the rim is rounded by the normals' smoothing): one flat face
    rows, cols = np.nonzero(cov)
    radius = math.sqrt(cov.sum() / math.pi)
    ii, jj = np.indices(cov.shape)
    inner = np.hypot(ii - rows.mean(), jj - cols.mean()) < 0.8 * radius
    lum = _luminance(r.rgba)[inner]
    assert lum.max() - lum.min() < 3


def test_ambient_occlusion_darkens_a_deep_narrow_well():
    # a block whose top face (normal +z) has a well 6 voxels wide and 30 deep, seen from the
    # top: the well's floor and the top face share the normal, only occlusion differs
    mask = np.zeros((60, 60, 60), dtype=bool)
    mask[10:50, 10:50, 10:50] = True
    mask[20:50, 27:33, 27:33] = False
    mesh = bone_mesh(mask, SP)
    v = mesh.vertices / SP
    axis = (np.abs(v[:, 1] - 29.5) < 1) & (np.abs(v[:, 2] - 29.5) < 1)
    floor = axis & (v[:, 0] > 15) & (v[:, 0] < 25)
    top = (np.abs(v[:, 1] - 29.5) < 1) & (np.abs(v[:, 2] - 18.5) < 1) & (v[:, 0] > 45)
    assert floor.sum() >= 4 and top.sum() >= 4
    assert mesh.normals[floor, 0].min() > 0.95 and mesh.normals[top, 0].min() > 0.99
    assert mesh.ao[floor].max() < 0.6 and mesh.ao[top].min() > 0.95
    # in the image: the floor is darker with occlusion, the open top face is not
    lum = {}
    for ao in (True, False):
        r = render_bone(mask, SP, view="top", pixel_mm=SP / 2, width_px=60, height_px=60,
                        ao=ao, supersample=1)
        lum[ao] = _luminance(r.rgba)
    centre, open_face = (30, 30), (30, 8)  # (row, col): the well's axis, 11 voxels off it
    assert lum[True][centre] < lum[False][centre] - 40
    assert abs(lum[True][open_face] - lum[False][open_face]) < 3
    assert lum[True][centre] < lum[True][open_face] - 40


# --------------------------------------------------------------------------- determinism


@pytest.fixture(scope="module")
def sponge():
    return random_trabecular((40, 36, 32), bv_tv=0.3, scale=2.0, seed=3)


def test_same_input_same_bytes(sponge, tmp_path):
    a = render_bone(sponge, SP, width_px=160, scale_bar_mm="auto")
    b = render_bone(sponge, SP, width_px=160, scale_bar_mm="auto")
    np.testing.assert_array_equal(a.rgba, b.rgba)
    save_png(a, tmp_path / "a.png")
    save_png(b.rgba, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGBA" and not im.info.get("timestamp")
        np.testing.assert_array_equal(np.asarray(im), a.rgba)


def test_same_image_with_one_and_two_threads(sponge):
    mesh = bone_mesh(sponge, SP)
    before = numba.get_num_threads()
    try:
        images = []
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            images.append(render_surface(mesh, width_px=300).rgba)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(images[0], images[1])


def test_turntable_gif(sponge, tmp_path):
    paths = [turntable(sponge, SP, 4, path=tmp_path / f"t{k}.gif", width_px=80) for k in (0, 1)]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with Image.open(paths[0]) as im:
        assert im.n_frames == 4
        sizes = set()
        for k in range(4):
            im.seek(k)
            sizes.add(im.size)
        assert len(sizes) == 1  # one framing for the whole turn


# --------------------------------------------------------------------------- scale bar


def _bar_run(rgba):
    """Longest run of pure-black pixels in any row, and the row."""
    black = np.all(rgba == (0, 0, 0, 255), axis=-1)
    best, best_row = 0, -1
    for i, row in enumerate(black):
        padded = np.concatenate([[False], row, [False]]).astype(np.int8)
        d = np.diff(padded)
        runs = np.nonzero(d == -1)[0] - np.nonzero(d == 1)[0]
        if runs.size and runs.max() > best:
            best, best_row = int(runs.max()), i
    return best, best_row, black


@pytest.mark.parametrize("bar", [0.2, "auto"])
def test_scale_bar_length_matches_its_label(ball_mesh, bar):
    r = render_surface(ball_mesh, view="top", width_px=300, scale_bar_mm=bar)
    length, row, _ = _bar_run(r.rgba)
    assert r.scale_bar_mm in ROUND_LENGTHS_MM
    if bar == "auto":
        assert r.scale_bar_mm / r.pixel_mm <= 0.25 * r.rgba.shape[1]
    else:
        assert r.scale_bar_mm == bar
    assert abs(length - r.scale_bar_mm / r.pixel_mm) <= 1
    dark = _luminance(r.rgba) < 128
    assert dark[max(0, row - 30): row - 2].sum() > 20  # the label above the bar
    assert bar_label(r.scale_bar_mm) in ("0.1 mm", "0.2 mm")


def test_bad_arguments_are_named():
    mask = ball(20, 6)
    with pytest.raises(ConfigError, match="view must be one of"):
        render_bone(mask, SP, view="sideways", width_px=32)
    with pytest.raises(ConfigError, match="background must be"):
        render_bone(mask, SP, width_px=32, background="black")
    with pytest.raises(ConfigError, match="highlight must have the mask's shape"):
        render_bone(mask, SP, highlight=np.ones((3, 3, 3), bool))
    with pytest.raises(ConfigError, match="no bone voxel"):
        render_bone(np.zeros((5, 5, 5), bool), SP)
    with pytest.raises(ConfigError, match="does not fit"):
        render_bone(mask, SP, width_px=32, scale_bar_mm=50.0)
