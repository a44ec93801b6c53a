"""Reconstruction-folder discovery, validation and lazy reading (written folders and real data)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ctmorph.errors import ConfigError, ScanError
from ctmorph.io import find_scan_dirs, read_scan, write_nrecon_folder


def _volume(dtype: type = np.uint8, shape: tuple[int, int, int] = (4, 7, 9)) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _write(folder: Path, volume: np.ndarray | None = None, **kwargs) -> Path:
    kwargs.setdefault("voxel_size_um", 9.0)
    return write_nrecon_folder(folder, _volume() if volume is None else volume, **kwargs)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_type", "dtype", "index_length"),
    [
        ("bmp", np.uint8, 4),
        ("tif", np.uint8, 4),
        ("png", np.uint8, 8),
        ("tif", np.uint16, 8),
        ("png", np.uint16, 4),
    ],
)
def test_roundtrip(tmp_path: Path, file_type: str, dtype: type, index_length: int) -> None:
    volume = _volume(dtype)
    folder = _write(
        tmp_path / "femur_12",
        volume,
        voxel_size_um=8.5,
        file_type=file_type,
        index_length=index_length,
        first_section=37,
        cs_window=(-0.002, 0.08),
    )
    scan = read_scan(folder)
    assert scan.name == "femur_12" and scan.path == folder
    assert scan.shape == volume.shape
    assert scan.dtype == dtype and scan.gmax == np.iinfo(dtype).max
    assert scan.voxel_size_um == 8.5
    assert scan.spacing == pytest.approx((0.0085, 0.0085, 0.0085))
    assert scan.sections.tolist() == [37, 38, 39, 40]
    assert scan.sections.dtype == np.int64
    assert [p.name for p in scan.files] == [
        f"femur_12_rec{s:0{index_length}d}.{file_type}" for s in range(37, 41)
    ]
    assert scan.cs_window == (-0.002, 0.08)
    assert scan.no_data_zero is False
    assert scan.file_type == file_type and scan.prefix == "femur_12_rec"
    assert scan.log is not None and scan.log.path == folder / "femur_12_rec.log"
    vol = scan.read_volume()
    assert vol.dtype == dtype
    np.testing.assert_array_equal(vol, volume)
    np.testing.assert_array_equal(scan.read_slab(1, 3), volume[1:3])
    np.testing.assert_array_equal(scan.read_slice(-1), volume[-1])


def test_describe_is_json_and_complete(tmp_path: Path) -> None:
    folder = _write(tmp_path / "a", _volume(np.uint16), file_type="tif", round_roi=True)
    info = read_scan(folder).describe()
    json.dumps(info)
    assert info["scan"] == "a"
    assert info["scanner"] == "SkyScan1172"
    assert (info["n_slices"], info["first_section"], info["last_section"]) == (4, 0, 3)
    assert info["slice_shape"] == [7, 9] and info["gaps"] == []
    assert (info["dtype"], info["bit_depth"], info["file_type"]) == ("uint16", 16, "tif")
    assert info["file_pattern"] == "a_rec####.tif"
    assert info["round_roi"] is True and info["cs_window"] == [0.0, 0.1]
    assert info["voxel_size_um"] == 9.0 and info["voxel_size_source"] == "log"
    assert info["settings"]["roi_mode"] == "ON_ROUND"
    assert info["log"].endswith("a_rec.log")


def test_double_underscore_prefix(tmp_path: Path) -> None:
    scan = read_scan(_write(tmp_path / "sham_"))
    assert scan.prefix == "sham__rec"
    assert scan.files[0].name == "sham__rec0000.bmp"


def test_cp1252_crlf_log_with_old_typo_and_no_name_convention(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "old",
        settings={
            "User": {"User Name": "Müller µ°"},
            "Reconstruction": {
                "Minimum for CS to Image Conversion": None,
                "Mininum for CS to Image Conversion": "-0.003000",
            },
            "File name convention": None,
        },
    )
    assert b"M\xfcller \xb5\xb0\r\n" in (folder / "old_rec.log").read_bytes()
    scan = read_scan(folder)
    assert scan.log.get("User", "User Name") == "Müller µ°"
    assert scan.log.prefix is None
    assert scan.prefix == "old_rec"  # [Acquisition] Filename Prefix + '_rec'
    assert scan.cs_window == (-0.003, 0.1)
    assert scan.shape[0] == 4


def test_renamed_log_and_anonymised_prefix(tmp_path: Path, caplog) -> None:
    folder = _write(
        tmp_path / "rat_01",
        file_type="tif",
        index_length=8,
        log_name="rat_01.log",
        settings={"File name convention": {"Filename Prefix": "Subject#_rec"}},
    )
    with caplog.at_level(logging.WARNING, logger="ctmorph.io.skyscan"):
        scan = read_scan(folder)
    assert scan.log.path.name == "rat_01.log"
    assert scan.prefix == "rat_01_rec" and scan.shape[0] == 4
    assert "log prefix 'Subject#_rec' matches no files" in caplog.text


def test_scan_and_sub_scan_logs_ignored_preview_not_a_slice(tmp_path: Path) -> None:
    folder = _write(tmp_path / "b", log_name="b_renamed.log")
    (folder / "b.log").write_text(
        "[System]\nScanner=SkyScan1172\n[Acquisition]\nFilename Prefix=b\n"
    )
    (folder / "b~00.log").write_text("[System]\nScanner=x\n[Reconstruction]\nPseudo-parallel=1\n")
    (folder / "garbage.log").write_bytes(b"\x00\x01binary")
    scan = read_scan(folder)
    assert scan.log.path.name == "b_renamed.log"
    assert (folder / "b_rec_spr.bmp").is_file()
    assert all("_spr" not in p.name for p in scan.files)


def test_prefix_ending_in_digits_split_by_index_length(tmp_path: Path) -> None:
    # Without the log's index length, 'Tooth001' + '00000003' would read as section 10000003.
    folder = _write(
        tmp_path / "t",
        prefix="Tooth001",
        index_length=8,
        first_section=3,
        settings={"File name convention": {"Filename Prefix": "anonymised"}},
    )
    scan = read_scan(folder)
    assert scan.prefix == "Tooth001"
    assert scan.sections.tolist() == [3, 4, 5, 6]


def test_plain_stack_needs_voxel_size(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    volume = _volume()
    for i, plane in enumerate(volume):
        tifffile.imwrite(folder / f"core_{i:04d}.tif", plane)
    with pytest.raises(ScanError, match=r"stack: has no reconstruction log .*; pass --voxel-size"):
        read_scan(folder)
    scan = read_scan(folder, voxel_size_um=19.5)
    assert scan.log is None and scan.cs_window is None and not scan.no_data_zero
    assert scan.prefix == "core_" and scan.voxel_size_source == "argument"
    np.testing.assert_array_equal(scan.read_volume(), volume)
    assert scan.describe()["settings"] == {}


def test_explicit_voxel_size_wins_with_warning(tmp_path: Path, caplog) -> None:
    folder = _write(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="ctmorph.io.skyscan"):
        scan = read_scan(folder, voxel_size_um=10.0)
    assert scan.voxel_size_um == 10.0
    assert "voxel size 10 um given explicitly overrides the log's 9 um" in caplog.text
    with pytest.raises(ConfigError, match=r"voxel size must be positive and finite"):
        read_scan(folder, voxel_size_um=-1.0)


def test_log_range_disagreeing_with_files_warns(tmp_path: Path, caplog) -> None:
    folder = _write(tmp_path / "d", settings={"Reconstruction": {"Last Section": "10"}})
    with caplog.at_level(logging.WARNING, logger="ctmorph.io.skyscan"):
        scan = read_scan(folder)
    assert scan.shape[0] == 4
    assert "log says sections 0..10, the folder holds 0..3" in caplog.text


def test_anonymised_values_only_checked_for_consistency_are_tolerated(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "an",
        settings={"Reconstruction": {"First Section": "####", "Result Image Width (pixels)": "#"}},
    )
    assert read_scan(folder).sections.tolist() == [0, 1, 2, 3]


def test_palette_and_rgb_slices_collapse_to_grey(tmp_path: Path) -> None:
    folder = _write(tmp_path / "e", file_type="png")
    expected = _volume()
    ny, nx = expected.shape[1:]
    # Slice 1: palette image whose palette inverts the grey (index i shows grey 255 - i).
    palette_image = Image.frombytes("P", (nx, ny), (255 - expected[1]).tobytes())
    palette_image.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    palette_image.save(folder / "e_rec0001.png")
    # Slice 2: RGB with equal channels.
    Image.fromarray(np.repeat(expected[2][..., None], 3, axis=2)).save(folder / "e_rec0002.png")
    scan = read_scan(folder)
    with Image.open(scan.files[1]) as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(scan.read_volume(), expected)


def test_extra_copy_of_the_log_is_harmless(tmp_path: Path) -> None:
    folder = _write(tmp_path / "cp")
    (folder / "backup.log").write_bytes((folder / "cp_rec.log").read_bytes())
    assert read_scan(folder).log.path.name == "cp_rec.log"


def test_input_hash(tmp_path: Path) -> None:
    folder = _write(tmp_path / "h")
    scan = read_scan(folder)
    oracle = hashlib.sha256((folder / "h_rec.log").read_bytes())
    for path in scan.files:
        oracle.update(path.read_bytes())
    assert scan.input_hash() == f"sha256:{oracle.hexdigest()}"
    raw = bytearray(scan.files[2].read_bytes())
    raw[-1] ^= 1
    scan.files[2].write_bytes(bytes(raw))
    assert scan.input_hash() != f"sha256:{oracle.hexdigest()}"


def test_index_errors(tmp_path: Path) -> None:
    scan = read_scan(_write(tmp_path / "i"))
    with pytest.raises(IndexError, match=r"slice 4 out of range for i \(4 slices\)"):
        scan.read_slice(4)
    with pytest.raises(IndexError, match=r"slab 2:5 out of range"):
        scan.read_slab(2, 5)


# --- bad input: one line naming the file and the problem --------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match=r"nope: scan folder does not exist"):
        read_scan(tmp_path / "nope")


def test_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ScanError, match=r"f\.txt: is not a folder"):
        read_scan(tmp_path / "f.txt")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match=r"empty: scan folder is empty"):
        read_scan(tmp_path / "empty")


def test_folder_without_slices(tmp_path: Path) -> None:
    folder = _write(tmp_path / "g")
    for path in folder.glob("g_rec0*.bmp"):
        path.unlink()
    with pytest.raises(ScanError, match=r"g: no slice images \(<prefix><number>\.bmp"):
        read_scan(folder)


def test_zero_byte_slice_says_so(tmp_path: Path) -> None:
    for file_type in ("bmp", "tif"):
        folder = _write(tmp_path / file_type, file_type=file_type)
        victim = folder / f"{file_type}_rec0002.{file_type}"
        victim.write_bytes(b"")
        message = "^" + re.escape(f"{victim}: empty file (0 bytes)") + "$"
        with pytest.raises(ScanError, match=message):
            read_scan(folder)


def test_only_a_scan_log_says_which_log_and_why(tmp_path: Path) -> None:
    from ctmorph.calibration import scan_window
    from ctmorph.errors import CalibrationError

    folder = _write(tmp_path / "F01")
    (tmp_path / "F01" / "F01_rec.log").unlink()
    scan_log = folder / "F01.log"
    scan_log.write_text("[System]\nScanner=SkyScan1172\n[Acquisition]\nFilename Prefix=F01\n")
    why = f"{scan_log}: has no [Reconstruction] section"
    with pytest.raises(ScanError, match="^" + re.escape(
            f"{folder}: has no reconstruction log ({why}); pass --voxel-size") + "$"):
        read_scan(folder)
    scan = read_scan(folder, voxel_size_um=9.0)
    assert scan.log is None and scan.no_log_reason == why
    with pytest.raises(CalibrationError, match="^" + re.escape(
            f"{folder}: has no reconstruction log ({why}), so no 'Minimum/Maximum for CS to "
            "Image Conversion' window; cannot convert its grey values to density") + "$"):
        scan_window(scan)
    # every .log found, with its reason, in folder order
    sub_scan = folder / "F01~00.log"
    sub_scan.write_text("[Reconstruction]\nPseudo-parallel=1\n")
    (folder / "junk.log").write_bytes(b"\x00\x01")
    scan = read_scan(folder, voxel_size_um=9.0)
    assert scan.no_log_reason == (
        f"{why}; {sub_scan}: its [Reconstruction] section has none of Pixel Size (um), First "
        f"Section, Result File Type, Sections Count (a sub-scan log); {folder / 'junk.log'}: "
        "not a SkyScan log (binary content)"
    )
    # a folder without any log, and one whose log is used
    assert read_scan(_write(tmp_path / "ok")).no_log_reason is None


def test_plain_stack_without_log_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    for i, plane in enumerate(_volume()):
        tifffile.imwrite(folder / f"core_{i:04d}.tif", plane)
    with pytest.raises(ScanError, match="^" + re.escape(
            f"{folder}: has no reconstruction log (no .log file); pass --voxel-size") + "$"):
        read_scan(folder)
    assert read_scan(folder, voxel_size_um=9.0).no_log_reason == "no .log file"


def test_parent_folder_passed_as_scan(tmp_path: Path) -> None:
    _write(tmp_path / "study" / "rat_1")
    with pytest.raises(ScanError, match=r"study: no slice images in this folder, only subfolders"):
        read_scan(tmp_path / "study")


def test_gap_lists_missing_sections(tmp_path: Path) -> None:
    folder = _write(tmp_path / "gap", _volume(shape=(8, 4, 4)), first_section=100)
    (folder / "gap_rec0102.bmp").unlink()
    (folder / "gap_rec0105.bmp").unlink()
    with pytest.raises(ScanError, match=r"gap: 2 slice\(s\) missing .* 100\.\.107: 102, 105$"):
        read_scan(folder)


def test_duplicate_section(tmp_path: Path) -> None:
    folder = _write(tmp_path / "dup")
    (folder / "dup_rec00001.bmp").write_bytes((folder / "dup_rec0001.bmp").read_bytes())
    with pytest.raises(ScanError, match=r"dup: section 1 appears twice"):
        read_scan(folder)


def test_mixed_sizes_name_file_and_sizes(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m")
    Image.fromarray(np.zeros((7, 10), np.uint8)).save(folder / "m_rec0002.bmp")
    with pytest.raises(
        ScanError, match=r"m_rec0002\.bmp: slice is 7x10 pixels but m_rec0000\.bmp is 7x9"
    ):
        read_scan(folder)


def test_mixed_bit_depths(tmp_path: Path) -> None:
    folder = _write(tmp_path / "md", file_type="tif")
    tifffile.imwrite(folder / "md_rec0003.tif", np.zeros((7, 9), np.uint16))
    with pytest.raises(
        ScanError, match=r"md_rec0003\.tif: slice is uint16 but md_rec0000\.tif is uint8"
    ):
        read_scan(folder)


def test_unsupported_dtype(tmp_path: Path) -> None:
    folder = tmp_path / "fl"
    folder.mkdir()
    tifffile.imwrite(folder / "x_0001.tif", np.zeros((3, 3), np.float32))
    with pytest.raises(ScanError, match=r"x_0001\.tif: float32 slices are not supported"):
        read_scan(folder, voxel_size_um=1.0)


@pytest.mark.parametrize("file_type", ["bmp", "tif", "png"])
def test_garbage_slice_fails_at_discovery(tmp_path: Path, file_type: str) -> None:
    folder = _write(tmp_path / "gb", file_type=file_type)
    (folder / f"gb_rec0001.{file_type}").write_bytes(b"not an image at all" * 10)
    with pytest.raises(ScanError, match=rf"gb_rec0001\.{file_type}: cannot read slice header"):
        read_scan(folder)


@pytest.mark.parametrize(
    ("file_type", "dtype"), [("bmp", np.uint8), ("tif", np.uint16), ("png", np.uint8)]
)
def test_truncated_slice_fails_at_read_time(tmp_path: Path, file_type: str, dtype: type) -> None:
    folder = _write(tmp_path / "tr", _volume(dtype, (3, 40, 40)), file_type=file_type)
    scan = read_scan(folder)
    path = folder / f"tr_rec0001.{file_type}"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    np.testing.assert_array_equal(scan.read_slice(0), _volume(dtype, (3, 40, 40))[0])
    with pytest.raises(ScanError, match=rf"tr_rec0001\.{file_type}: cannot read slice \("):
        scan.read_slice(1)
    with pytest.raises(ScanError, match=r"tr_rec0001"):
        scan.read_volume()


def test_slice_changed_size_after_discovery(tmp_path: Path) -> None:
    scan = read_scan(_write(tmp_path / "ch"))
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(scan.files[1])
    with pytest.raises(ScanError, match=r"ch_rec0001\.bmp: slice is 3x3 pixels, expected 7x9"):
        scan.read_slice(1)


def test_log_without_voxel_size(tmp_path: Path) -> None:
    folder = _write(tmp_path / "nv", settings={"Reconstruction": {"Pixel Size (um)": None}})
    with pytest.raises(
        ScanError,
        match=r"nv_rec\.log: no 'Pixel Size \(um\)' in \[Reconstruction\]; pass --voxel-size",
    ):
        read_scan(folder)
    assert read_scan(folder, voxel_size_um=9.0).voxel_size_um == 9.0


def test_log_with_bad_voxel_size(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bv", settings={"Reconstruction": {"Pixel Size (um)": "0"}})
    with pytest.raises(
        ScanError, match=r"bv_rec\.log: \[Reconstruction\] Pixel Size \(um\)=0\.0 is not"
    ):
        read_scan(folder)


def test_section_step_other_than_one(tmp_path: Path) -> None:
    folder = _write(tmp_path / "st", settings={"Reconstruction": {"Section to Section Step": 2}})
    with pytest.raises(ScanError, match=r"st_rec\.log: Section to Section Step=2 is not supported"):
        read_scan(folder)


def test_two_reconstructions_in_one_folder(tmp_path: Path) -> None:
    folder = _write(tmp_path / "two", prefix="two_IR_rec")
    _write(folder, prefix="other_rec")
    with pytest.raises(
        ScanError, match=r"two: several reconstructions in one folder \(other_rec\*\.bmp, two_IR"
    ):
        read_scan(folder)
    _write(folder, prefix="two_rec")  # the one named after the folder wins
    assert read_scan(folder).prefix == "two_rec"


def test_ambiguous_plain_stacks(tmp_path: Path) -> None:
    folder = tmp_path / "amb"
    folder.mkdir()
    for name in ("a_0001.tif", "a_0002.tif", "b_0001.tif", "b_0002.tif"):
        tifffile.imwrite(folder / name, np.zeros((2, 2), np.uint8))
    with pytest.raises(ScanError, match=r"amb: several slice series of equal size, cannot choose"):
        read_scan(folder, voxel_size_um=1.0)


# --- find_scan_dirs ---------------------------------------------------------------------------


def test_find_scan_dirs(tmp_path: Path) -> None:
    study = tmp_path / "study"
    for name in ("rat_10", "rat_02", "rat_01"):
        _write(study / name, _volume(shape=(1, 2, 2)))
    (study / "notes").mkdir()
    single = _write(tmp_path / "lone", _volume(shape=(1, 2, 2)))
    found = find_scan_dirs([study, single, study / "rat_01"])
    assert found == [study / "rat_01", study / "rat_02", study / "rat_10", single]
    assert find_scan_dirs(str(single)) == [single]


def test_find_scan_dirs_errors(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match=r"missing: scan folder does not exist"):
        find_scan_dirs([tmp_path / "missing"])
    (tmp_path / "hollow" / "sub").mkdir(parents=True)
    with pytest.raises(ScanError, match=r"hollow: holds no scan \(no slice images"):
        find_scan_dirs([tmp_path / "hollow"])


# --- real data --------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_mouse_thorax_folder(shared_data: Path) -> None:
    folder = shared_data / "skyscan1278_mouse_thorax"
    scan = read_scan(folder)
    assert scan.log.path.name == "Subject2_Day3.log"  # renamed, anonymised prefix
    assert scan.shape == (237, 164, 248)
    assert scan.dtype == np.uint16 and scan.gmax == 65535
    assert (scan.sections[0], scan.sections[-1]) == (267, 503)
    assert scan.files[0].name == "Subject2_Day3_rec00000267.tif"
    assert all(not p.name.endswith("_spr.bmp") for p in scan.files)
    assert scan.voxel_size_um == 105.32
    assert scan.cs_window == (-0.007, 0.05)
    assert scan.no_data_zero is True
    assert scan.describe()["scanner"] == "SkyScan1278"
    volume = scan.read_volume()
    assert np.mean(volume == 0) == pytest.approx(0.215, abs=0.005)  # outside the round ROI
    # Air sits at grey 65535 * 0.007 / 0.057 = 8048 (README): the first peak of the histogram,
    # which a byte-swapped or wrongly scaled read would move.
    hist = np.bincount(volume[volume > 0].ravel() // 1000)
    first_populated = int(np.flatnonzero(hist)[0])
    assert first_populated == 7 and hist[8] > hist[7] and hist[8] > hist[9]


@pytest.mark.realdata
def test_real_human_core_plain_stack(shared_data: Path) -> None:
    folder = shared_data / "human_trabecular_core"
    with pytest.raises(ScanError, match=r"human_trabecular_core: has no reconstruction log"):
        read_scan(folder)
    scan = read_scan(folder, voxel_size_um=19.5)
    assert scan.shape == (495, 257, 257) and scan.dtype == np.uint8
    assert scan.spacing == pytest.approx((0.0195,) * 3)
    assert scan.files[0].name == "Ti_2923_D_1_0000.tif"
    assert scan.sections[-1] == 494
    middle = scan.read_slice(247)
    assert middle.shape == (257, 257) and middle.dtype == np.uint8
    assert find_scan_dirs([folder]) == [folder]
