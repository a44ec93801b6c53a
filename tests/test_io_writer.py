"""The NRecon folder writer: names, bit depths and log format as NRecon writes them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ctmorph.errors import ConfigError
from ctmorph.io import parse_log, write_nrecon_folder


def _volume(dtype: type = np.uint8, shape: tuple[int, int, int] = (3, 6, 8)) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (np.arange(np.prod(shape)).reshape(shape) * 37 % (top + 1)).astype(dtype)


def test_file_names_and_log(tmp_path: Path) -> None:
    folder = write_nrecon_folder(
        tmp_path / "rat_03", _volume(), voxel_size_um=9.0, first_section=98, index_length=4
    )
    assert folder == tmp_path / "rat_03"
    assert sorted(p.name for p in folder.iterdir()) == [
        "rat_03_rec.log",
        "rat_03_rec0098.bmp",
        "rat_03_rec0099.bmp",
        "rat_03_rec0100.bmp",
        "rat_03_rec_spr.bmp",
    ]
    raw = (folder / "rat_03_rec.log").read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    text = raw.decode("cp1252")
    assert text.startswith("[System]\r\nScanner=SkyScan1172\r\n")
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert headers == [
        "[System]",
        "[User]",
        "[Acquisition]",
        "[Reconstruction]",
        "[File name convention]",
    ]
    log = parse_log(folder / "rat_03_rec.log")
    assert log.voxel_size_um == 9.0
    # The projection pixel is a different number, so reading the wrong key is caught.
    assert float(log.get("Acquisition", "Image Pixel Size (um)")) != 9.0
    assert log.get("Acquisition", "Depth (bits)") == "16"
    assert (log.first_section, log.last_section, log.index_length) == (98, 100, 4)
    assert log.get("Reconstruction", "Sections Count") == "3"
    assert log.get("Reconstruction", "Result File Type") == "BMP"
    assert log.get("Reconstruction", "Result Image Width (pixels)") == "8"
    assert log.get("Reconstruction", "Result Image Height (pixels)") == "6"
    assert log.prefix == "rat_03_rec"
    assert log.get("Acquisition", "Filename Prefix") == "rat_03"
    assert (log.cs_min, log.cs_max) == (0.0, 0.1)
    assert log.get("Reconstruction", "Reconstruction from ROI") == "OFF"
    assert log.settings()["reconstruction_program"] == "NRecon"


def test_bmp_is_8bit_palette_like_nrecon(tmp_path: Path) -> None:
    volume = _volume()
    folder = write_nrecon_folder(tmp_path / "s", volume, voxel_size_um=5.0)
    for name in ("s_rec0000.bmp", "s_rec_spr.bmp"):
        raw = (folder / name).read_bytes()
        offset, bits = struct.unpack_from("<I", raw, 10)[0], struct.unpack_from("<H", raw, 28)[0]
        assert (bits, offset) == (8, 14 + 40 + 256 * 4)  # 8 bpp + 256-entry palette
        palette = np.frombuffer(raw[54:offset], np.uint8).reshape(256, 4)[:, :3]
        assert np.array_equal(palette, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1))
    with Image.open(folder / "s_rec0002.bmp") as im:
        assert np.array_equal(np.asarray(im), volume[2])


def test_tif_png_bit_depths_and_tif_resolution(tmp_path: Path) -> None:
    v16 = _volume(np.uint16)
    tif = write_nrecon_folder(tmp_path / "t", v16, voxel_size_um=10.0, file_type="TIFF")
    with tifffile.TiffFile(tif / "t_rec0001.tif") as f:
        page = f.pages[0]
        assert page.dtype == np.uint16
        assert np.array_equal(page.asarray(), v16[1])
        xres = page.tags["XResolution"].value
        assert 25.4 / (xres[0] / xres[1]) == pytest.approx(0.010)  # mm per pixel, as NRecon
    png = write_nrecon_folder(tmp_path / "p", v16, voxel_size_um=10.0, file_type="png")
    with Image.open(png / "p_rec0002.png") as im:
        assert np.array_equal(np.asarray(im).astype(np.uint16), v16[2])
    assert parse_log(png / "p_rec.log").result_file_type == "png"


def test_prefix_ending_in_underscore_and_8_digits(tmp_path: Path) -> None:
    folder = write_nrecon_folder(
        tmp_path / "OVX_", _volume(), voxel_size_um=9.0, index_length=8, first_section=5
    )
    assert (folder / "OVX__rec00000005.bmp").is_file()
    assert (folder / "OVX__rec.log").is_file()


def test_settings_override_add_remove(tmp_path: Path) -> None:
    folder = write_nrecon_folder(
        tmp_path / "o",
        _volume(),
        voxel_size_um=9.0,
        round_roi=True,
        log_name="renamed.log",
        settings={
            "reconstruction": {"SMOOTHING": 3, "Pixel Size (um)": None, "Extra Key": "x"},
            "File name convention": None,
            "User": {"User Name": "Ångström µ°"},
            "New Section": {"a": 1},
        },
    )
    assert not (folder / "o_rec.log").exists()
    text = (folder / "renamed.log").read_bytes().decode("cp1252")
    assert "Smoothing=3\r\n" in text
    assert "\r\nPixel Size (um)=" not in text
    assert "[File name convention]" not in text
    assert "User Name=Ångström µ°\r\n" in text
    assert text.endswith("[New Section]\r\na=1\r\n")
    log = parse_log(folder / "renamed.log")
    assert log.round_roi and log.voxel_size_um is None
    assert log.get("Reconstruction", "Extra Key") == "x"


def test_rewrite_removes_stale_slices(tmp_path: Path) -> None:
    write_nrecon_folder(tmp_path / "r", _volume(shape=(5, 4, 4)), voxel_size_um=9.0)
    (tmp_path / "r" / "notes.txt").write_text("keep me")
    write_nrecon_folder(tmp_path / "r", _volume(shape=(2, 4, 4)), voxel_size_um=9.0)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "notes.txt",
        "r_rec.log",
        "r_rec0000.bmp",
        "r_rec0001.bmp",
        "r_rec_spr.bmp",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume": _volume(np.uint16)}, r"BMP slices are 8-bit; got a uint16 volume"),
        (
            {"volume": np.zeros((2, 3), np.uint8)},
            r"non-empty \(Z, Y, X\) array, got shape \(2, 3\)",
        ),
        ({"volume": np.zeros((2, 3, 3), np.float32)}, r"uint8 or uint16, got float32"),
        ({"file_type": "jpg"}, r"file_type must be one of bmp, tif, png, got 'jpg'"),
        ({"voxel_size_um": 0.0}, r"voxel_size_um must be positive and finite \(µm\), got 0.0"),
        ({"voxel_size_um": float("nan")}, r"voxel_size_um must be positive"),
        ({"first_section": 9998, "index_length": 4}, r"index_length=4 is too short for .* 10000"),
        ({"first_section": -1}, r"first_section must be >= 0, got -1"),
        ({"cs_window": (0.1, 0.1)}, r"cs_window must be \(min, max\) with min < max"),
        ({"settings": {"User": {"User Name": "名前"}}}, r"'名前', which cp1252 cannot encode"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"volume": _volume(), "voxel_size_um": 9.0} | kwargs
    volume = args.pop("volume")
    with pytest.raises(ConfigError, match=message):
        write_nrecon_folder(tmp_path / "bad", volume, **args)
    assert not (tmp_path / "bad").exists()  # nothing written on bad input
