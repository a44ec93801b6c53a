"""Synthetic hydroxyapatite (HA) calibration phantoms and grey volumes from density fields.

Bruker SkyScan labs calibrate bone mineral density with HA-epoxy rods (typically 0.25 and
0.75 g/cm³ HA) scanned and reconstructed with the same settings as the bones.
:func:`make_ha_phantom` writes such a scan as an NRecon folder; :func:`grey_from_density` turns
any density field (a synthetic bone, say) into grey values through the same attenuation model,
so a calibration fitted on the phantom scans must give back the bone's density.

The imaging model, deliberately simple and fully known:

1. density (g/cm³ HA) -> attenuation, linear (:class:`AttenuationModel`): ``att = matrix +
   per_density * density``, in NRecon's CS units (the units of the log's ``Minimum/Maximum for
   CS to Image Conversion``, the reconstructed linear attenuation coefficient);
2. partial volume: rod edges are area-sampled (4 x 4 sub-pixels), then a Gaussian point-spread
   function of ``blur_vox`` voxels acts in 3-D;
3. Gaussian noise of SD ``noise`` attenuation units;
4. attenuation -> grey through the scan's CS window, ``grey = round((att - cs_min) / (cs_max -
   cs_min) * gmax)`` clipped to ``0..gmax`` (NRecon's linear conversion), with ``gmax`` 255 for
   8-bit and 65535 for 16-bit slices.

The grey mapping is written out here on purpose instead of reusing
:mod:`ctmorph.calibration`, so tests of that module check it against an independent model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..io.writer import write_nrecon_folder

__all__ = [
    "AttenuationModel",
    "DEFAULT_HA_MODEL",
    "ha_rods_attenuation",
    "grey_from_attenuation",
    "grey_from_density",
    "make_ha_phantom",
    "cs_window_for_levels",
]

_SUPERSAMPLE = 4


@dataclass(frozen=True)
class AttenuationModel:
    """Linear density -> attenuation model of a synthetic scanner.

    Attributes
    ----------
    matrix_attenuation : float
        Attenuation of 0 g/cm³ HA (the epoxy matrix of the rods, marrow, soft tissue), NRecon CS
        units.
    attenuation_per_density : float
        Attenuation added per g/cm³ HA, NRecon CS units per g/cm³.

    Notes
    -----
    The calibration line a correct fit must recover is the inverse,
    ``density = slope * att + intercept`` with :attr:`slope` and :attr:`intercept`.
    """

    matrix_attenuation: float = 0.012
    attenuation_per_density: float = 0.040

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.matrix_attenuation)
            and math.isfinite(self.attenuation_per_density)
            and self.attenuation_per_density > 0
        ):
            raise ConfigError(
                "attenuation model needs a finite matrix attenuation and a positive attenuation "
                f"per g/cm³, got {self.matrix_attenuation!r}, {self.attenuation_per_density!r}"
            )

    def attenuation(self, density: float | np.ndarray) -> float | np.ndarray:
        """Attenuation (NRecon CS units) of ``density`` g/cm³ HA."""
        return self.matrix_attenuation + self.attenuation_per_density * np.asarray(density)

    @property
    def slope(self) -> float:
        """True calibration slope, g/cm³ HA per attenuation unit."""
        return 1.0 / self.attenuation_per_density

    @property
    def intercept(self) -> float:
        """True calibration intercept, g/cm³ HA (the density at attenuation 0)."""
        return -self.matrix_attenuation / self.attenuation_per_density


#: Plausible NRecon numbers for a SkyScan 1172 at 70 kV: a 0.75 g/cm³ rod near 0.042, rat
#: trabecular tissue (~1.1 g/cm³ HA) near 0.056, inside the usual 0-0.1 CS window.
DEFAULT_HA_MODEL = AttenuationModel()


def _rod_centres(n: int, diameter_vox: float) -> list[tuple[float, float]]:
    """Rod centres (y, x) in voxels relative to the slice centre: one in the middle, or n on a
    circle with a gap of half a diameter between neighbours."""
    if n == 1:
        return [(0.0, 0.0)]
    radius = 1.5 * diameter_vox / (2.0 * math.sin(math.pi / n))
    return [
        (-radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def ha_rods_attenuation(
    densities: Sequence[float],
    *,
    voxel_size_um: float = 9.0,
    rod_diameter_mm: float = 2.0,
    n_slices: int = 24,
    slice_size: int | None = None,
    model: AttenuationModel = DEFAULT_HA_MODEL,
    medium_attenuation: float = 0.0,
    container_wall_mm: float | None = None,
    rod_length_fraction: float = 1.0,
    blur_vox: float = 0.7,
    noise: float = 0.0015,
    seed: int = 0,
) -> np.ndarray:
    """Attenuation volume of upright HA rods, before conversion to grey.

    Parameters
    ----------
    densities : sequence of float
        HA density of each rod, g/cm³. One rod sits in the slice centre; several sit on a circle
        (in the given order, clockwise from the top).
    voxel_size_um : float
        Isotropic voxel size, µm.
    rod_diameter_mm : float
        Rod diameter, mm (Bruker ships 2 mm rods for mice and 4 mm rods for rats).
    n_slices : int
        Number of slices (z).
    slice_size : int, optional
        Slice width and height in voxels; default: the rods plus a margin of 0.4 diameters (and
        the container).
    model : AttenuationModel
        Density -> attenuation.
    medium_attenuation : float
        Attenuation around the rods (0 = air; ``model.matrix_attenuation`` imitates water).
    container_wall_mm : float, optional
        Thickness of a plastic tube wall (attenuation 1.1 x the matrix) around the rods; the
        medium fills the tube, air is outside it. None: no tube, the medium fills the slice.
    rod_length_fraction : float
        Fraction of the slices the rods occupy (centred in z); below 1 the rods have flat end
        caps inside the volume.
    blur_vox : float
        Gaussian point-spread function, sigma in voxels (3-D).
    noise : float
        SD of additive Gaussian noise, attenuation units.
    seed : int
        Noise seed.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Attenuation, NRecon CS units.
    """
    densities = [float(d) for d in densities]
    if not densities or not all(math.isfinite(d) for d in densities):
        raise ConfigError(f"densities must be one or more finite numbers, got {densities!r}")
    if not (voxel_size_um > 0 and rod_diameter_mm > 0 and n_slices >= 1):
        raise ConfigError("voxel size, rod diameter and number of slices must be positive")
    if not 0 < rod_length_fraction <= 1:
        raise ConfigError(f"rod_length_fraction must be in (0, 1], got {rod_length_fraction!r}")
    vox_mm = voxel_size_um / 1000.0
    diameter = rod_diameter_mm / vox_mm
    centres = _rod_centres(len(densities), diameter)
    extent = max(math.hypot(cy, cx) for cy, cx in centres) + diameter / 2
    wall = container_wall_mm / vox_mm if container_wall_mm else 0.0
    tube_inner = extent + 0.2 * diameter
    if slice_size is None:
        slice_size = (
            int(math.ceil(2 * (tube_inner + wall + 0.2 * diameter)))
            if wall
            else int(math.ceil(2 * (extent + 0.4 * diameter)))
        )
    size = int(slice_size)

    # Area sampling on a sub-pixel grid, then block averaging: exact partial volume at edges.
    ss = _SUPERSAMPLE
    coord = (np.arange(size * ss) + 0.5) / ss - size / 2.0
    yy, xx = np.meshgrid(coord, coord, indexing="ij")
    rr = np.hypot(yy, xx)
    if wall:
        background = np.where(rr < tube_inner, medium_attenuation, 0.0)
        background = np.where(
            (rr >= tube_inner) & (rr < tube_inner + wall),
            1.1 * model.matrix_attenuation,
            background,
        )
    else:
        background = np.full(rr.shape, float(medium_attenuation))
    with_rods = background.copy()
    for (cy, cx), density in zip(centres, densities, strict=True):
        inside = np.hypot(yy - cy, xx - cx) < diameter / 2
        with_rods[inside] = float(model.attenuation(density))

    def block_mean(a: np.ndarray) -> np.ndarray:
        return a.reshape(size, ss, size, ss).mean(axis=(1, 3))

    plane_rods, plane_empty = block_mean(with_rods), block_mean(background)
    n_rod = max(1, int(round(rod_length_fraction * n_slices)))
    z0 = (n_slices - n_rod) // 2
    att = np.empty((n_slices, size, size), dtype=np.float64)
    att[:] = plane_empty
    att[z0 : z0 + n_rod] = plane_rods
    if blur_vox > 0:
        att = ndimage.gaussian_filter(att, blur_vox, mode="nearest")
    if noise > 0:
        att += np.random.default_rng(seed).normal(0.0, noise, att.shape)
    return att.astype(np.float32)


def cs_window_for_levels(
    greys: tuple[float, float],
    densities: tuple[float, float],
    *,
    gmax: int = 255,
    model: AttenuationModel = DEFAULT_HA_MODEL,
) -> tuple[float, float]:
    """The CS window under which two grey levels mean two densities.

    For generators that paint grey levels directly (the synthetic femur: marrow ~60, bone
    ~207 in 8 bits): writing the scan with this window makes its grey values consistent with
    ``model``, so phantoms made with the same model calibrate it correctly.

    Parameters
    ----------
    greys : (float, float)
        Two different grey values of the scan.
    densities : (float, float)
        The densities (g/cm³ HA) they should represent.
    gmax : int
        255 or 65535.
    model : AttenuationModel
        Density -> attenuation.

    Returns
    -------
    (float, float)
        ``(cs_min, cs_max)``, NRecon CS units.

    Examples
    --------
    >>> lo, hi = cs_window_for_levels((60, 207), (0.0, 1.15))
    >>> round(lo, 5), round(hi, 5)
    (-0.00678, 0.07302)
    """
    (g0, g1), (d0, d1) = greys, densities
    if g0 == g1 or d0 == d1:
        raise ConfigError(f"need two different grey levels and densities, got {greys}, {densities}")
    a0, a1 = float(model.attenuation(d0)), float(model.attenuation(d1))
    per_grey = (a1 - a0) / (g1 - g0)
    if per_grey <= 0:
        raise ConfigError("the brighter grey level must have the higher density")
    lo = a0 - g0 * per_grey
    return lo, lo + gmax * per_grey


def grey_from_attenuation(
    attenuation: np.ndarray,
    *,
    cs_window: tuple[float, float],
    dtype: type[np.integer] | np.dtype = np.uint8,
    round_roi: bool = False,
) -> np.ndarray:
    """Convert attenuation to NRecon grey values through a CS window.

    Parameters
    ----------
    attenuation : (Z, Y, X) ndarray
        NRecon CS units.
    cs_window : (float, float)
        Attenuation mapped to grey 0 and to the full scale ``gmax``.
    dtype : uint8 or uint16
        Slice bit depth; ``gmax`` is 255 or 65535.
    round_roi : bool
        Imitate ``Reconstruction from ROI=ON_ROUND``: exact zeros outside the inscribed circle
        of each slice ("no data"), and at least grey 1 inside it.

    Returns
    -------
    (Z, Y, X) ndarray of ``dtype``
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"dtype must be uint8 or uint16, got {dtype}")
    lo, hi = (float(v) for v in cs_window)
    if not lo < hi:
        raise ConfigError(f"cs_window must be (min, max) with min < max, got {cs_window!r}")
    gmax = np.iinfo(dtype).max
    grey = np.rint((np.asarray(attenuation, dtype=np.float64) - lo) / (hi - lo) * gmax)
    grey = np.clip(grey, 0, gmax)
    if round_roi:
        ny, nx = grey.shape[-2:]
        yy, xx = np.ogrid[:ny, :nx]
        circle = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) <= min(ny, nx) / 2 - 0.5
        grey = np.where(circle, np.maximum(grey, 1), 0)
    return grey.astype(dtype)


def grey_from_density(
    density: np.ndarray,
    *,
    cs_window: tuple[float, float],
    dtype: type[np.integer] | np.dtype = np.uint8,
    model: AttenuationModel = DEFAULT_HA_MODEL,
    blur_vox: float = 0.7,
    noise: float = 0.0015,
    seed: int = 0,
    round_roi: bool = False,
) -> np.ndarray:
    """Grey values of a density field (e.g. a synthetic bone) under the phantoms' model.

    Parameters
    ----------
    density : (Z, Y, X) array_like of float
        g/cm³ HA per voxel (tissue ~1.1 in rat trabeculae, ~0 in marrow).
    cs_window, dtype, round_roi
        As :func:`grey_from_attenuation`.
    model, blur_vox, noise, seed
        As :func:`ha_rods_attenuation`.

    Returns
    -------
    (Z, Y, X) ndarray of ``dtype``
    """
    att = np.asarray(model.attenuation(np.asarray(density, dtype=np.float64)), dtype=np.float64)
    if blur_vox > 0:
        att = ndimage.gaussian_filter(att, blur_vox, mode="nearest")
    if noise > 0:
        att = att + np.random.default_rng(seed).normal(0.0, noise, att.shape)
    return grey_from_attenuation(att, cs_window=cs_window, dtype=dtype, round_roi=round_roi)


def make_ha_phantom(
    folder: str | PathLike[str],
    densities: Sequence[float],
    *,
    voxel_size_um: float = 9.0,
    rod_diameter_mm: float = 2.0,
    n_slices: int = 24,
    slice_size: int | None = None,
    cs_window: tuple[float, float] = (0.0, 0.1),
    dtype: type[np.integer] | np.dtype = np.uint8,
    file_type: str | None = None,
    model: AttenuationModel = DEFAULT_HA_MODEL,
    medium_attenuation: float = 0.0,
    container_wall_mm: float | None = None,
    rod_length_fraction: float = 1.0,
    blur_vox: float = 0.7,
    noise: float = 0.0015,
    seed: int = 0,
    round_roi: bool = False,
    settings: Mapping[str, Mapping[str, object] | None] | None = None,
    scanner: str = "SkyScan1172",
) -> Path:
    """Write a synthetic HA-rod phantom scan as an NRecon reconstruction folder.

    Parameters
    ----------
    folder : str or path
        Output folder (its name is the scan name).
    densities : sequence of float
        HA density of each rod, g/cm³ (one rod per folder, as most labs scan them, or several).
    voxel_size_um, rod_diameter_mm, n_slices, slice_size, model, medium_attenuation,
    container_wall_mm, rod_length_fraction, blur_vox, noise, seed
        As :func:`ha_rods_attenuation`.
    cs_window : (float, float)
        The scan's ``Minimum/Maximum for CS to Image Conversion`` (NRecon CS units).
    dtype : uint8 or uint16
        Slice bit depth.
    file_type : {'bmp', 'tif', 'png'}, optional
        Default ``bmp`` for 8-bit, ``tif`` for 16-bit.
    round_roi : bool
        ``ON_ROUND`` reconstruction (zeros outside the circle are "no data").
    settings : mapping, optional
        Log overrides for :func:`ctmorph.io.write_nrecon_folder`, e.g.
        ``{"Reconstruction": {"Beam Hardening Correction (%)": "20"}}``.
    scanner : str
        [System] ``Scanner``.

    Returns
    -------
    pathlib.Path
        The folder. The true calibration line is ``model.slope``, ``model.intercept``.

    Examples
    --------
    The two phantom scans of the sample study, reconstructed with different windows:

    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> a = make_ha_phantom(tmp / "HA025", [0.25], rod_diameter_mm=1.0, voxel_size_um=20)
    >>> b = make_ha_phantom(tmp / "HA075", [0.75], rod_diameter_mm=1.0, voxel_size_um=20,
    ...                     cs_window=(0.0, 0.12), seed=1)
    >>> sorted(p.suffix for p in a.iterdir())[:2]
    ['.bmp', '.bmp']
    """
    att = ha_rods_attenuation(
        densities,
        voxel_size_um=voxel_size_um,
        rod_diameter_mm=rod_diameter_mm,
        n_slices=n_slices,
        slice_size=slice_size,
        model=model,
        medium_attenuation=medium_attenuation,
        container_wall_mm=container_wall_mm,
        rod_length_fraction=rod_length_fraction,
        blur_vox=blur_vox,
        noise=noise,
        seed=seed,
    )
    dtype = np.dtype(dtype)
    grey = grey_from_attenuation(att, cs_window=cs_window, dtype=dtype, round_roi=round_roi)
    if file_type is None:
        file_type = "bmp" if dtype == np.uint8 else "tif"
    return write_nrecon_folder(
        folder,
        grey,
        voxel_size_um=voxel_size_um,
        file_type=file_type,
        cs_window=cs_window,
        round_roi=round_roi,
        scanner=scanner,
        settings=settings,
    )
