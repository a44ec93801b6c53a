"""The periosteal envelope of a femur, slice by slice, and the distance maps that come with it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from skimage.morphology import convex_hull_image

from ...errors import ConfigError
from ...spacing import normalize_spacing
from .base import as_bone, bbox_yx, inplane_sq_edt, label_inplane

__all__ = ["CLOSING_MM", "MIN_AREA_MM2", "EnvelopeMaps", "envelope_maps", "periosteal_envelope"]

logger = logging.getLogger(__name__)

CLOSING_MM = 0.05  # envelope closing radius
MIN_AREA_MM2 = 0.01  # smallest envelope cross-section kept


@dataclass
class EnvelopeMaps:
    """Envelope and distance maps of a scan, on the in-plane crop ``crop``."""

    envelope: np.ndarray  # (Z, Y, X) bool, full size
    crop: tuple[slice, slice]
    depth: np.ndarray  # crop: depth below the periosteal surface (mm), 0 outside
    dist_bone2: np.ndarray  # crop: squared in-plane distance to the nearest bone (mm²)


def envelope_maps(
    bone: np.ndarray, sp: tuple[float, ...], closing_mm: float, min_area_mm2: float
) -> EnvelopeMaps:
    """Closing as dilation, hole filling, largest component, erosion: two EDTs in all.

    The distance to bone gives the dilation by ``closing_mm``; after filling holes and
    keeping the largest component of each slice, the depth map ``D`` of the filled dilated
    region gives both the erosion (``D > r``) and the depth below the periosteal surface of
    the eroded region (``D - r``, exact for Euclidean distances).
    """
    nz = bone.shape[0]
    pad = int(math.ceil(closing_mm / min(sp[1:]))) + 2
    ys, xs = bbox_yx(bone, pad)
    b = bone[:, ys, xs]
    envelope = np.zeros(bone.shape, dtype=bool)
    if b.size == 0 or not b.any():
        z = np.zeros(b.shape, dtype=np.float32)
        return EnvelopeMaps(envelope, (ys, xs), z, np.full(b.shape, np.inf, dtype=np.float32))
    dist_bone2 = inplane_sq_edt(~b, sp)
    dilated = dist_bone2 <= np.float32(closing_mm**2)
    # fill holes: background components (in-plane) that reach the slice border outside the
    # convex hull of the slice's bone. A marrow cavity cut open by the field-of-view edge
    # reaches the border only between the cortex ends, i.e. inside the hull, and is filled;
    # soft tissue and air reach it outside the hull.
    lab, n, _ = label_inplane(~dilated, full=False)  # background: 4-connected
    outside = np.zeros(n + 1, dtype=bool)
    rim = np.zeros(dilated.shape[1:], dtype=bool)
    rim[0, :] = rim[-1, :] = rim[:, 0] = rim[:, -1] = True
    for z in range(lab.shape[0]):
        open_rim = rim
        if dilated[z][rim].any():  # bone reaches the border of the crop (= of the image)
            open_rim = rim & ~convex_hull_image(dilated[z])
        outside[lab[z][open_rim]] = True
    outside[0] = True  # label 0 is the foreground itself
    filled = dilated | ~outside[lab]
    del lab, dilated
    # keep the largest component of each slice
    lab, n, last = label_inplane(filled)
    del filled
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    slice_of = np.searchsorted(last, np.arange(n + 1), side="left")
    order = np.lexsort((-sizes, slice_of))  # per slice, largest first
    keep = np.zeros(n + 1, dtype=bool)
    first_of_slice = np.ones(order.size, dtype=bool)
    first_of_slice[1:] = slice_of[order[1:]] != slice_of[order[:-1]]
    min_px = (min_area_mm2 + math.pi * closing_mm**2) / (sp[1] * sp[2])
    winners = order[first_of_slice]
    keep[winners[(winners > 0) & (sizes[winners] >= min_px)]] = True
    main = keep[lab]
    del lab
    depth = np.sqrt(inplane_sq_edt(main, sp))
    if closing_mm > 0:
        depth -= np.float32(closing_mm)
        np.maximum(depth, 0.0, out=depth)
        envelope[:, ys, xs] = depth > 0
    else:
        envelope[:, ys, xs] = main
    logger.debug("envelope: %d of %d slices", int(envelope.any(axis=(1, 2)).sum()), nz)
    return EnvelopeMaps(envelope, (ys, xs), depth, dist_bone2)


def periosteal_envelope(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    closing_mm: float = CLOSING_MM,
    min_area_mm2: float = MIN_AREA_MM2,
) -> np.ndarray:
    """Region enclosed by the periosteal surface, slice by slice.

    Per slice: morphological closing with a disk of radius ``closing_mm`` (bridges cortical
    pores and gaps up to twice that wide), filling of holes, and the largest 8-connected
    component (drops the patella, fibula fragments and debris).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    closing_mm : float
        Closing radius in mm (0 = no closing).
    min_area_mm2 : float
        Slices whose largest component is smaller (mm²) get an empty envelope.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The filled periosteal envelope.

    Notes
    -----
    The closing is done as dilation, hole filling and erosion (so holes are filled in the
    dilated region); with Euclidean distance transforms this costs two transforms in all.
    """
    bone = as_bone(bone)
    sp = normalize_spacing(spacing)
    if not (math.isfinite(closing_mm) and closing_mm >= 0):
        raise ConfigError(f"closing_mm must be >= 0 (mm), got {closing_mm!r}")
    return envelope_maps(bone, sp, closing_mm, min_area_mm2).envelope
