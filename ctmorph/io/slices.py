"""Slice files of a reconstruction folder: names (``<prefix><index>.<ext>``, previews), headers
and pixels (BMP palette images collapsed to grey, TIFF 8/16-bit), and the series a folder holds."""


from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import ScanError
from .log import SkyscanLog
from .names import IMAGE_EXTS, IMAGE_RE, canon_ext

__all__ = [
    "read_header",
    "read_pixels",
    "series_for_prefix",
    "dominant_series",
]





# ---------------------------------------------------------------------------------------------
# Slice files
# ---------------------------------------------------------------------------------------------


def _collapse_rgb(arr: np.ndarray) -> np.ndarray:
    """(Y, X, C) colour or grey+alpha -> (Y, X) grey, exact when the channels are equal."""
    if arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., :-1]
    grey = arr[..., 0]
    if all(np.array_equal(grey, arr[..., c]) for c in range(1, arr.shape[-1])):
        return np.ascontiguousarray(grey)
    weights = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma
    return np.rint(arr[..., :3] @ weights).astype(arr.dtype)


_PIL_DTYPES = {
    "1": np.uint8,
    "L": np.uint8,
    "P": np.uint8,
    "LA": np.uint8,
    "RGB": np.uint8,
    "RGBA": np.uint8,
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I": np.uint16,  # Pillow opens 16-bit greyscale PNGs as mode "I" in some versions
}


def read_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    """(ny, nx) and dtype of a slice file, reading its header only."""
    try:
        if path.stat().st_size == 0:
            raise ScanError(f"{path}: empty file (0 bytes)")
        if canon_ext(path.suffix[1:]) == "tif":
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape, dtype = (int(page.imagelength), int(page.imagewidth)), page.dtype
        else:
            with Image.open(path) as im:
                (nx, ny), mode = im.size, im.mode
            shape = (ny, nx)
            if mode not in _PIL_DTYPES:
                raise ScanError(f"{path}: unsupported image mode {mode!r} (need greyscale)")
            dtype = _PIL_DTYPES[mode]
    except ScanError:
        raise
    except Exception as exc:  # any decoder failure means a bad slice file
        raise ScanError(f"{path}: cannot read slice header ({exc})") from None
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ScanError(f"{path}: {dtype} slices are not supported (uint8 or uint16 only)")
    return shape, dtype


def read_pixels(path: Path) -> np.ndarray:
    if canon_ext(path.suffix[1:]) == "tif":
        arr = tifffile.imread(path, key=0)
    else:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGB")  # exact grey for a grey palette; luma otherwise
            arr = np.asarray(im)
            if im.mode == "1":
                arr = arr.astype(np.uint8) * np.uint8(255)
            elif im.mode == "I":
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise ValueError("32-bit values outside 0..65535")
                arr = arr.astype(np.uint16)
            elif im.mode.startswith("I;16"):
                arr = arr.astype(np.uint16)  # native byte order
    if arr.ndim == 3:
        arr = _collapse_rgb(arr)
    return arr


def _split_names(
    images: Sequence[Path], index_length: int | None
) -> dict[tuple[str, str], list[tuple[str, Path]]]:
    """Group slice-like files by (prefix, extension) -> [(digits, path)].

    The section index is the trailing run of digits, or exactly ``index_length`` trailing digits
    when the log says so (so a prefix ending in digits, ``Tooth001_0001``, splits right).
    """
    groups: dict[tuple[str, str], list[tuple[str, Path]]] = defaultdict(list)
    for path in images:
        match = IMAGE_RE.match(path.name)
        if match is None:
            continue
        prefix, digits, ext = match.groups()
        if index_length and len(digits) > index_length:
            prefix, digits = prefix + digits[:-index_length], digits[-index_length:]
        groups[(prefix, canon_ext(ext))].append((digits, path))
    return groups


def series_for_prefix(
    prefix: str, images: Sequence[Path], file_type: str | None
) -> tuple[str, str, list[tuple[int, Path]]] | None:
    """Files ``<prefix><digits>.<ext>``, preferring the log's extension; None if there are none."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(" + "|".join(IMAGE_EXTS) + r")$", re.I)
    by_ext: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in images:
        match = pattern.match(path.name)
        if match:
            by_ext[canon_ext(match.group(2))].append((int(match.group(1)), path))
    if not by_ext:
        return None
    ext = file_type if file_type in by_ext else max(by_ext, key=lambda e: (len(by_ext[e]), e))
    actual_prefix = by_ext[ext][0][1].name[: len(prefix)]
    return actual_prefix, ext, by_ext[ext]


def dominant_series(
    folder: Path, images: Sequence[Path], log: SkyscanLog | None
) -> tuple[str, str, list[tuple[int, Path]]]:
    """The largest group of ``<prefix><digits>.<ext>`` files, preferring what the log says."""
    index_length = log.index_length if log is not None else None
    file_type = log.result_file_type if log is not None else None
    groups = _split_names(images, index_length)

    def rank(item: tuple[tuple[str, str], list[tuple[str, Path]]]) -> tuple[int, bool, bool]:
        (prefix, ext), members = item
        return len(members), ext == file_type, prefix.lower().endswith("_rec")

    ranked = sorted(groups.items(), key=rank, reverse=True)
    if len(ranked) > 1 and rank(ranked[0]) == rank(ranked[1]):
        names = ", ".join(f"{p}*.{e} ({len(m)} files)" for (p, e), m in ranked[:3])
        raise ScanError(f"{folder}: several slice series of equal size, cannot choose: {names}")
    (prefix, ext), members = ranked[0]
    return prefix, ext, [(int(digits), path) for digits, path in members]
