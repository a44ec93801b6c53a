"""The VOI slab: loaded once, cropped in-plane, and above a size packed into a store that is
measured block by block in bounded memory."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import SegmentationError
from ..morphometry.zsource import Block
from ..segment.femur import FemurStream
from .stream import Segmenter, chunk_slices

__all__ = [
    "Slab",
    "load_slab",
    "Planes",
    "SlabStore",
    "CHUNKED_MEASURE_VOXELS",
    "STORE_RAM_BYTES",
]

logger = logging.getLogger(__name__)


@dataclass
class Slab:
    crop: tuple[slice, slice]
    bone: np.ndarray | None  # (z1 - z0, Y', X') on crop; None when in ``store``
    region: np.ndarray | None
    grey: np.ndarray | None
    envelope: np.ndarray | None
    axials: dict[str, tuple[int, np.ndarray, np.ndarray]]
    store: SlabStore | None = None


def load_slab(seg: Segmenter, z0: int, z1: int, filled: np.ndarray, femur: FemurStream, *,
               pad: int,
               want_grey: bool, want_envelope: bool = False,
               axial_at: dict[str, int] | None = None,
               store_voi: tuple[int, int] | None = None) -> Slab:
    """Bone, endocortical region (and grey, envelope) of slices ``[z0, z1)`` at full
    resolution, cropped in-plane to the envelope's box over those slices + ``pad`` pixels.

    With ``store_voi`` (the VOI's slices, relative to ``z0``) a slab of more than
    ``CHUNKED_MEASURE_VOXELS`` voxels goes into a :class:`SlabStore` (``Slab.store``)
    instead of the ``bone`` and ``region`` arrays (then None)."""
    scan = seg.scan
    _, ny, nx = scan.shape
    bb = femur.bbox[z0:z1]
    bb = bb[bb[:, 0] >= 0]
    if bb.size == 0:
        ys, xs = slice(0, 0), slice(0, 0)
    else:
        ys = slice(max(0, int(bb[:, 0].min()) - pad), min(ny, int(bb[:, 1].max()) + pad))
        xs = slice(max(0, int(bb[:, 2].min()) - pad), min(nx, int(bb[:, 3].max()) + pad))
    shape = (z1 - z0, ys.stop - ys.start, xs.stop - xs.start)
    store = None
    if store_voi is not None and math.prod(shape) > CHUNKED_MEASURE_VOXELS:
        grey_dtype = np.dtype(scan.dtype) if want_grey else None
        per_voxel = 1 + (grey_dtype.itemsize if grey_dtype is not None else 0)
        store = SlabStore(shape, store_voi, grey_dtype=grey_dtype,
                           in_memory=math.prod(shape) * per_voxel <= STORE_RAM_BYTES)
        logger.info("%s: VOI slab of %d x %d x %d voxels measured in z-blocks (%s)", scan.name,
                    *shape, "in memory" if store.in_memory else "temporary file")
    bone_s = np.empty(shape, dtype=bool) if store is None else None
    region_s = np.empty(shape, dtype=bool) if store is None else None
    grey_s = np.empty(shape, dtype=scan.dtype) if want_grey and store is None else None
    env_s = np.empty(shape, dtype=bool) if want_envelope else None
    wanted = {v: k for k, v in (axial_at or {}).items()}
    axials: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    step, map_step = chunk_slices(ny * nx)
    for s in range(z0, z1, step):
        e = min(z1, s + step)
        bone, grey = seg.chunk(s, e)
        if bone_s is not None:
            bone_s[s - z0 : e - z0] = bone[:, ys, xs]
        if grey_s is not None:
            grey_s[s - z0 : e - z0] = grey[:, ys, xs]
        for z in range(s, e):
            if z in wanted:
                axials[wanted[z]] = (z, grey[z - s].copy(), bone[z - s].copy())
        for t in range(s, e, map_step):
            u = min(e, t + map_step)
            b = bone[t - s : u - s]
            maps = femur.maps(b)
            reg = femur.region(b, t, filled, maps)
            if store is not None:
                store.write(t - z0, np.ascontiguousarray(b[:, ys, xs]),
                            np.ascontiguousarray(reg[:, ys, xs]),
                            grey[t - s : u - s, ys, xs] if want_grey else None)
            else:
                region_s[t - z0 : u - z0] = reg[:, ys, xs]
            if env_s is not None:
                env_s[t - z0 : u - z0] = maps.envelope[:, ys, xs]
    return Slab((ys, xs), bone_s, region_s, grey_s, env_s, axials, store)



# --------------------------------------------------------------------------------------------
# bounded memory: a large VOI slab is kept packed and measured block by block

#: Slab voxels (VOI + context, cropped in-plane) above which the slab is packed into a
#: :class:`SlabStore` and measured from z-blocks; smaller slabs are measured in memory.
CHUNKED_MEASURE_VOXELS = 48_000_000
#: Packed slabs up to this many bytes stay in memory; larger ones go to a temporary file.
STORE_RAM_BYTES = 64 * 2**20


class Planes:
    """Slices of one dtype, written once in z order, kept in memory or in an unnamed
    temporary file (``TMPDIR``); :meth:`read` returns any slice range."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, *, in_memory: bool,
                 prefix: str) -> None:
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._mem = np.empty(shape, dtype=self._dtype) if in_memory else None
        self._file = None if in_memory else tempfile.TemporaryFile(prefix=prefix)

    @property
    def in_memory(self) -> bool:
        return self._mem is not None

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store slices ``[z0, z0 + len(planes))``, right after the last ones written."""
        if self._mem is not None:
            self._mem[z0:z0 + planes.shape[0]] = planes
        else:
            self._file.write(np.ascontiguousarray(planes, dtype=self._dtype).data)

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Slices ``[z0, z1)``: a view when in memory, a fresh array from the file."""
        if self._mem is not None:
            return self._mem[z0:z1]
        plane = self._shape[1] * self._shape[2]
        self._file.seek(z0 * plane * self._dtype.itemsize)
        raw = np.fromfile(self._file, dtype=self._dtype, count=(z1 - z0) * plane)
        return raw.reshape(z1 - z0, *self._shape[1:])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._mem = None


class SlabStore:
    """The VOI slab, one byte per voxel (bit 0 bone, bit 1 endocortical region), in memory
    or in an unnamed temporary file (``TMPDIR``), written once in z order.

    As a :class:`~ctmorph.morphometry.zsource.ZSource` it reads ``bone``, the VOI (the region
    on slices ``voi_z``) and the marrow space (the region) of any slice range. With
    ``grey_dtype`` (calibrated scans) it also keeps the raw grey values, for
    :meth:`read_grey`.
    """

    def __init__(self, shape: tuple[int, int, int], voi_z: tuple[int, int], *,
                 in_memory: bool, grey_dtype: np.dtype | None = None) -> None:
        self._shape = tuple(int(s) for s in shape)
        self.voi_z = voi_z
        self._packed = Planes(self._shape, np.uint8, in_memory=in_memory,
                               prefix="ctmorph-slab-")
        self._grey = None if grey_dtype is None else Planes(
            self._shape, grey_dtype, in_memory=in_memory, prefix="ctmorph-grey-")
        self._written = 0
        self.region_count = np.zeros(self._shape[0], dtype=np.int64)  # per slice
        self._ybox = [self._shape[1], 0]
        self._xbox = [self._shape[2], 0]

    @property
    def in_memory(self) -> bool:
        return self._packed.in_memory

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def write(self, z0: int, bone: np.ndarray, region: np.ndarray,
              grey: np.ndarray | None = None) -> None:
        """Store slices ``[z0, z0 + len(bone))``; calls come in z order without gaps.
        ``grey`` is required when the store keeps grey values, ignored otherwise."""
        if z0 != self._written:
            raise AssertionError(f"slab store written out of order ({z0} != {self._written})")
        if self._grey is not None:
            self._grey.write(z0, grey)
        packed = bone.view(np.uint8) | (region.view(np.uint8) << 1)
        z1 = z0 + packed.shape[0]
        self.region_count[z0:z1] = np.count_nonzero(region, axis=(1, 2))
        v0, v1 = max(z0, self.voi_z[0]), min(z1, self.voi_z[1])
        if v1 > v0:
            part = region[v0 - z0:v1 - z0]
            rows = np.flatnonzero(part.any(axis=(0, 2)))
            cols = np.flatnonzero(part.any(axis=(0, 1)))
            if rows.size:
                y, x = self._ybox, self._xbox
                self._ybox = [min(y[0], int(rows[0])), max(y[1], int(rows[-1]) + 1)]
                self._xbox = [min(x[0], int(cols[0])), max(x[1], int(cols[-1]) + 1)]
        self._packed.write(z0, packed)
        self._written = z1

    def read_grey(self, z0: int, z1: int) -> np.ndarray:
        """Raw grey values of slices ``[z0, z1)`` (a store made with ``grey_dtype``)."""
        if self._grey is None:
            raise ValueError("this slab store keeps no grey values")
        grey = self._grey.read(z0, z1)
        return grey.copy() if self._grey.in_memory else grey

    def read_phase(self, z0: int, z1: int, kind: str) -> np.ndarray:
        """One mask of slices ``[z0, z1)`` (see :func:`~ctmorph.morphometry.zsource.read_phase`),
        built from the packed bytes without the others."""
        raw = self._packed.read(z0, z1)
        if kind == "bone":
            return (raw & 1).view(bool)
        if kind == "marrow":
            return raw == 2
        if kind == "space":
            return raw != 0
        if kind == "voi":
            return self._voi((raw >> 1).view(bool), z0, z1)
        raise ValueError(f"unknown phase {kind!r}")

    def _voi(self, region: np.ndarray, z0: int, z1: int) -> np.ndarray:
        """The VOI of slices ``[z0, z1)``: ``region`` (modified in place) off ``voi_z`` cleared."""
        v0, v1 = self.voi_z
        region[: max(0, min(z1, v0) - z0)] = False
        region[max(0, max(z0, v1) - z0):] = False
        return region

    def read(self, z0: int, z1: int) -> Block:
        raw = self._packed.read(z0, z1)
        region = (raw >> 1).view(bool)
        return Block((raw & 1).view(bool), self._voi(region.copy(), z0, z1), region)

    def voi_box(self) -> tuple[int, int, int, int, int, int]:
        if self._ybox[1] <= self._ybox[0]:
            raise SegmentationError("the VOI is empty (no voxel selected)")
        v0, v1 = self.voi_z
        zs = v0 + np.flatnonzero(self.region_count[v0:v1])
        return (int(zs[0]), int(zs[-1]) + 1, *self._ybox, *self._xbox)

    def close(self) -> None:
        self._packed.close()
        if self._grey is not None:
            self._grey.close()


