"""Write a volume as a Bruker NRecon reconstruction folder (slices, log, preview).

Used by the sample-study generator and by tests: a folder written here is read back by
:func:`ctmorph.io.read_scan` exactly like a real NRecon output folder (same file names, same log
sections and key names as NRecon 1.6/1.7 on a SkyScan 1172).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import ConfigError

__all__ = ["write_nrecon_folder"]

logger = logging.getLogger(__name__)

_FILE_TYPES = {"bmp": "bmp", "tif": "tif", "tiff": "tif", "png": "png"}

# Fixed acquisition values: plausible for a rat femur scan on a SkyScan 1172 and deterministic,
# so a regenerated sample study is byte-identical.
_STUDY_DATE = "Jan 15, 2024  10:00:00"
_RECON_DATE = "Jan 16, 2024  09:00:00"
# The projection pixel ([Acquisition] 'Image Pixel Size (um)') differs from the reconstructed
# voxel ([Reconstruction] 'Pixel Size (um)') in real logs; the factor here is deliberately large
# so that reading the wrong key is caught by any test on the voxel size.
_PROJECTION_PIXEL_FACTOR = 1.25


def write_nrecon_folder(
    folder: str | PathLike[str],
    volume: np.ndarray,
    *,
    voxel_size_um: float,
    prefix: str | None = None,
    first_section: int = 0,
    index_length: int = 4,
    file_type: str = "bmp",
    cs_window: tuple[float, float] = (0.0, 0.1),
    round_roi: bool = False,
    scanner: str = "SkyScan1172",
    settings: Mapping[str, Mapping[str, object] | None] | None = None,
    log_name: str | None = None,
) -> Path:
    """Write ``volume`` into ``folder`` the way NRecon writes a reconstruction.

    Parameters
    ----------
    folder : str or path
        Output folder; its name is the scan name. Created if needed. Files of an earlier write
        with the same prefix (slices, log, preview) are removed first; other files are kept.
    volume : (Z, Y, X) ndarray of uint8 or uint16
        Grey values, slice ``i`` is written as section ``first_section + i``. Written as given
        (no zeroing outside the round ROI even when ``round_roi`` is true).
    voxel_size_um : float
        Isotropic voxel size in µm, written as [Reconstruction] ``Pixel Size (um)``.
    prefix : str, optional
        Slice file prefix; default ``<folder name>_rec`` (so a name ending in ``_`` gives
        ``NAME__rec``, as NRecon does).
    first_section : int
        Section number of the first slice (NRecon numbers sections by detector row).
    index_length : int
        Zero-padded width of the section number in file names (4 on SkyScan 1172, 8 on newer).
    file_type : {'bmp', 'tif', 'png'}
        ``bmp``: 8-bit palette BMP with a grey palette (uint8 only); ``tif``: uncompressed TIFF
        with the voxel size as resolution; ``png``: 8- or 16-bit greyscale PNG.
    cs_window : (float, float)
        ``Minimum``/``Maximum for CS to Image Conversion``: the reconstructed attenuation values
        (NRecon's units) that NRecon mapped to grey 0 and to the maximum grey (255 or 65535).
    round_roi : bool
        Write ``Reconstruction from ROI=ON_ROUND`` (zeros outside the circle mean "no data")
        instead of ``OFF``.
    scanner : str
        [System] ``Scanner`` value.
    settings : mapping of section -> (mapping of key -> value or None) or None, optional
        Overrides applied to the log after the defaults: a key matching an existing key
        (case-insensitively) replaces its value, a new key is appended to the section, a value of
        ``None`` removes the key; a section mapped to ``None`` is removed, a new section is
        appended. Values are written with ``str()``.
    log_name : str, optional
        File name of the log; default ``<prefix>.log`` (pass another to imitate a renamed log).

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    ConfigError
        If an argument is invalid (dtype, shape, file type, voxel size, index too short, a log
        value not encodable in cp1252).
    """
    folder = Path(folder)
    volume = np.asarray(volume)
    ext = _FILE_TYPES.get(str(file_type).lower())
    if ext is None:
        raise ConfigError(f"file_type must be one of bmp, tif, png, got {file_type!r}")
    if volume.ndim != 3 or 0 in volume.shape:
        raise ConfigError(f"volume must be a non-empty (Z, Y, X) array, got shape {volume.shape}")
    if volume.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"volume must be uint8 or uint16, got {volume.dtype}")
    if ext == "bmp" and volume.dtype != np.uint8:
        raise ConfigError(f"BMP slices are 8-bit; got a {volume.dtype} volume (use tif or png)")
    if not (math.isfinite(voxel_size_um) and voxel_size_um > 0):
        raise ConfigError(f"voxel_size_um must be positive and finite (µm), got {voxel_size_um!r}")
    if first_section < 0:
        raise ConfigError(f"first_section must be >= 0, got {first_section}")
    last_section = first_section + volume.shape[0] - 1
    if index_length < len(str(last_section)):
        raise ConfigError(
            f"index_length={index_length} is too short for section number {last_section}"
        )
    cs_min, cs_max = (float(v) for v in cs_window)
    if not cs_min < cs_max:
        raise ConfigError(f"cs_window must be (min, max) with min < max, got {cs_window!r}")

    name = folder.resolve().name
    if prefix is None:
        prefix = f"{name}_rec"
    log_sections = _default_log(
        name=name,
        prefix=prefix,
        shape=volume.shape,
        voxel_size_um=float(voxel_size_um),
        first_section=first_section,
        last_section=last_section,
        index_length=index_length,
        ext=ext,
        cs_window=(cs_min, cs_max),
        round_roi=round_roi,
        scanner=scanner,
    )
    if settings:
        _apply_overrides(log_sections, settings)
    log_text = _format_log(log_sections)
    try:
        log_bytes = log_text.encode("cp1252")
    except UnicodeEncodeError as exc:
        bad = log_text[exc.start : exc.end]
        raise ConfigError(f"log value contains {bad!r}, which cp1252 cannot encode") from None

    folder.mkdir(parents=True, exist_ok=True)
    _remove_previous(folder, prefix)
    for i, plane in enumerate(volume):
        path = folder / f"{prefix}{first_section + i:0{index_length}d}.{ext}"
        _write_slice(path, np.ascontiguousarray(plane), ext, voxel_size_um)
    (folder / (log_name or f"{prefix}.log")).write_bytes(log_bytes)
    Image.fromarray(_preview(volume)).save(folder / f"{prefix}_spr.bmp", format="BMP")
    logger.debug("wrote %d %s slices to %s", volume.shape[0], ext, folder)
    return folder


def _write_slice(path: Path, plane: np.ndarray, ext: str, voxel_size_um: float) -> None:
    if ext == "tif":
        dpi = 25400.0 / voxel_size_um  # NRecon stores the voxel size as dots per inch
        tifffile.imwrite(
            path, plane, photometric="minisblack", resolution=(dpi, dpi), resolutionunit="INCH"
        )
    else:
        # Pillow writes mode "L" BMPs as 8-bit with a grey palette, like NRecon; uint16 arrays
        # become mode "I;16" and 16-bit greyscale PNGs.
        Image.fromarray(plane).save(path, format=ext.upper())


def _preview(volume: np.ndarray) -> np.ndarray:
    """Small 8-bit longitudinal maximum projection, standing in for NRecon's ``_spr.bmp``."""
    mip = volume.max(axis=1)
    step = max(1, math.ceil(max(mip.shape) / 128))
    mip = mip[::step, ::step]
    if mip.dtype == np.uint16:
        mip = (mip >> 8).astype(np.uint8)
    return np.ascontiguousarray(mip)


def _remove_previous(folder: Path, prefix: str) -> None:
    pattern = re.compile(
        re.escape(prefix) + r"(\d+\.(bmp|tif|tiff|png|jpg)|_spr\.bmp|\.log)$", re.IGNORECASE
    )
    for path in folder.iterdir():
        if path.is_file() and pattern.match(path.name):
            path.unlink()


def _default_log(
    *,
    name: str,
    prefix: str,
    shape: tuple[int, ...],
    voxel_size_um: float,
    first_section: int,
    last_section: int,
    index_length: int,
    ext: str,
    cs_window: tuple[float, float],
    round_roi: bool,
    scanner: str,
) -> dict[str, dict[str, str]]:
    nz, ny, nx = shape
    projection_pixel = voxel_size_um * _PROJECTION_PIXEL_FACTOR
    reconstruction = {
        "Reconstruction Program": "NRecon",
        "Program Version": "Version: 1.6.10.4",
        "Program Home Directory": "C:\\SkyScan\\NRecon_GPU",
        "Reconstruction engine": "NReconServer",
        "Engine version": "Version: 1.6.10",
        "Reconstruction from batch": "No",
        "Postalignment": "0.00",
        "Reconstruction servers": " CTMORPH ",
        "Dataset Origin": scanner,
        "Dataset Prefix": name,
        "Dataset Directory": f"D:\\Results\\{name}",
        "Output Directory": f"D:\\Results\\{name}\\rec",
        "Time and Date": _RECON_DATE,
        "First Section": str(first_section),
        "Last Section": str(last_section),
        "Reconstruction duration per slice (seconds)": "0.500000",
        f"Total reconstruction time ({nz} slices) in seconds": f"{0.5 * nz:.6f}",
        "Section to Section Step": "1",
        "Sections Count": str(nz),
        "Result File Type": ext.upper(),
        "Result File Header Length (bytes)": "1078" if ext == "bmp" else "Unknown",
        "Result Image Width (pixels)": str(nx),
        "Result Image Height (pixels)": str(ny),
        "Pixel Size (um)": f"{voxel_size_um:.5f}",
        "Reconstruction Angular Range (deg)": "186.40",
        "Use 180+": "OFF",
        "Angular Step (deg)": "0.4000",
        "Smoothing": "1",
        "Smoothing kernel": "2 (Gaussian)",
        "Ring Artifact Correction": "6",
        "Draw Scales": "OFF",
        "Object Bigger than FOV": "OFF",
        "Reconstruction from ROI": "ON_ROUND" if round_roi else "OFF",
    }
    if round_roi:
        reconstruction.update(
            {
                "ROI Top (pixels)": str(ny - 1),
                "ROI Bottom (pixels)": "0",
                "ROI Left (pixels)": "0",
                "ROI Right (pixels)": str(nx - 1),
                "ROI reference length": str(nx),
            }
        )
    reconstruction.update(
        {
            "Filter cutoff relative to Nyquist frequency": "100",
            "Filter type": "0",
            "Filter type description": "Hamming (Alpha=0.54)",
            "Undersampling factor": "1",
            "Threshold for defect pixel mask (%)": "0",
            "Beam Hardening Correction (%)": "30",
            "CS Static Rotation (deg)": "0.00",
            "Minimum for CS to Image Conversion": f"{cs_window[0]:.6f}",
            "Maximum for CS to Image Conversion": f"{cs_window[1]:.6f}",
            "HU Calibration": "OFF",
            "BMP LUT": "0",
            "Cone-beam Angle Horiz.(deg)": "11.459210",
            "Cone-beam Angle Vert.(deg)": "7.681380",
        }
    )
    return {
        "System": {
            "Scanner": scanner,
            "Instrument S/N": "000000",
            "Hardware version": "F",
            "Software": "Version 1. 5 (build 23)",
            "Home directory": f"C:\\{scanner}",
            "Source Type": "Hamamatsu 100/250",
            "Camera": "Hamamatsu C9300 11Mp camera",
            "Camera Pixel Size (um)": "    8.80",
            "CameraXYRatio": "1.0000",
        },
        "User": {"User Name": "ctmorph", "Computer Name": "CTMORPH"},
        "Acquisition": {
            "Data directory": f"D:\\Results\\{name}",
            "Filename Prefix": name,
            "Number of Files": f"{nz:5d}",
            "Source Voltage (kV)": "  70",
            "Source Current (uA)": " 142",
            "Number of Rows": f"{ny:5d}",
            "Number of Columns": f"{nx:5d}",
            "Camera binning": "1x1",
            "Image Rotation": "0.0000",
            "Gantry direction": "CC",
            "Image Pixel Size (um)": f"{projection_pixel:8.2f}",
            "Object to Source (mm)": "100.000",
            "Camera to Source (mm)": "350.000",
            "Filter": "Al 0.5mm",
            "Image Format": "TIFF",
            "Depth (bits)": "16",
            "Screen LUT": "0",
            "Exposure (ms)": "  1180",
            "Rotation Step (deg)": "0.400",
            "Frame Averaging": "ON (2)",
            "Random Movement": "OFF (10)",
            "Use 360 Rotation": "NO",
            "Geometrical Correction": "ON",
            "Median Filtering": "ON",
            "Flat Field Correction": "ON",
            "Rotation Direction": "CC",
            "Type Of Motion": "STEP AND SHOOT",
            "Study Date and Time": _STUDY_DATE,
        },
        "Reconstruction": reconstruction,
        "File name convention": {
            "Filename Index Length": str(index_length),
            "Filename Prefix": prefix,
        },
    }


def _apply_overrides(
    log: dict[str, dict[str, str]], settings: Mapping[str, Mapping[str, object] | None]
) -> None:
    for section, values in settings.items():
        existing_section = next((s for s in log if s.lower() == section.lower()), None)
        if values is None:
            if existing_section is not None:
                del log[existing_section]
            continue
        target = log.setdefault(existing_section or section, {})
        for key, value in values.items():
            existing_key = next((k for k in target if k.lower() == key.lower()), None)
            if value is None:
                if existing_key is not None:
                    del target[existing_key]
            else:
                target[existing_key or key] = str(value)


def _format_log(log: Mapping[str, Mapping[str, str]]) -> str:
    lines: list[str] = []
    for section, values in log.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key}={value}" for key, value in values.items())
    return "\r\n".join(lines) + "\r\n"
