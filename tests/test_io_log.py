"""SkyScan/NRecon log parser: real logs from three scanner models and synthetic edge cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ctmorph.errors import ScanError
from ctmorph.io import SkyscanLog, parse_log


def _write(path: Path, text: str, *, encoding: str = "cp1252", newline: str = "\r\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


# --- every real log ---------------------------------------------------------------------------


def test_real_log_parses(real_log: Path) -> None:
    log = parse_log(real_log)
    assert log.path == real_log
    assert log.scanner in {"Skyscan1172", "SkyScan1272", "SkyScan2214"}
    assert {"System", "Acquisition"} <= set(log.sections)
    json.dumps(log.settings())  # provenance must serialise

    if not real_log.name.endswith("_rec.log"):
        return
    # Reconstruction logs: the numbers the loader depends on are present and consistent.
    assert log.is_reconstruction_log
    assert isinstance(log.voxel_size_um, float) and log.voxel_size_um > 0
    # [Reconstruction] Pixel Size is the voxel; [Acquisition] Image Pixel Size the projection.
    projection = float(log.get("Acquisition", "Image Pixel Size (um)"))
    assert math.isclose(log.voxel_size_um, projection, rel_tol=0.01)
    assert log.last_section - log.first_section + 1 == int(
        log.get("Reconstruction", "Sections Count")
    )
    assert log.result_file_type == "png"
    assert log.index_length in (4, 8)
    assert log.prefix is not None and log.prefix.endswith("_rec")
    assert log.cs_min is not None and log.cs_max is not None and log.cs_min < log.cs_max
    if log.scanner == "Skyscan1172":
        assert log.index_length == 4
    else:
        assert log.index_length == 8


@pytest.mark.realdata
def test_sub_scan_and_scan_logs_are_not_reconstruction_logs(shared_data: Path) -> None:
    logs = shared_data / "skyscan_logs"
    sub_scan = parse_log(logs / "tooth-battalion__1__proj__Tooth001~00.log")
    assert "Reconstruction" in sub_scan.sections  # it has the section, with one key only
    assert not sub_scan.is_reconstruction_log
    assert sub_scan.voxel_size_um is None and sub_scan.prefix is None
    # A scan log to which NRecon appended its [Reconstruction] section does describe one.
    scan_log = parse_log(logs / "tooth-battalion__1__proj__Tooth001.log")
    assert scan_log.is_reconstruction_log
    assert scan_log.prefix is None  # no [File name convention] in a scan log
    assert scan_log.voxel_size_um == pytest.approx(8.55949)


@pytest.mark.realdata
def test_skyscan1172_values_read_by_eye(shared_data: Path) -> None:
    log = parse_log(
        shared_data / "skyscan_logs" / "zebrafish-gills__Control01__rec__Control01_rec.log"
    )
    assert log.scanner == "Skyscan1172"
    assert log.voxel_size_um == 1.65905
    assert (log.first_section, log.last_section) == (122, 2573)
    assert log.index_length == 4
    assert log.prefix == "Control01_rec"
    assert log.get("Acquisition", "Filename Prefix") == "Control01"  # same key, other section
    assert (log.cs_min, log.cs_max) == (0.0, 0.12949)
    assert not log.round_roi  # 'ON' is a rectangular ROI, only ON_ROUND zeroes a circle
    assert log.get("Reconstruction", "Result File Header Length (bytes)") == (
        "Unknown: compressed JPG format (100%)"
    )
    assert log.settings() == {
        "scanner": "Skyscan1172",
        "source_voltage_kv": 49.0,
        "source_current_ua": 167.0,
        "filter": "No Filter",
        "projection_pixel_size_um": 1.66,
        "voxel_size_um": 1.65905,
        "smoothing": 0,
        "smoothing_kernel": None,
        "ring_artifact_correction": 5,
        "beam_hardening_correction_percent": 46.0,
        "filter_type_description": "Hamming (Alpha=0.54)",
        "cs_min": 0.0,
        "cs_max": 0.12949,
        "reconstruction_program": "NRecon",
        "program_version": "1.7.1.0",
        "roi_mode": "ON",
    }


@pytest.mark.realdata
def test_skyscan1272_and_2214_values_read_by_eye(shared_data: Path) -> None:
    tooth = parse_log(shared_data / "skyscan_logs" / "tooth-battalion__1__rec__Tooth001_rec.log")
    assert tooth.scanner == "SkyScan1272"
    assert tooth.voxel_size_um == 8.55949
    assert (tooth.first_section, tooth.last_section, tooth.index_length) == (455, 2482, 8)
    assert tooth.cs_max == 0.18
    assert tooth.settings()["source_voltage_kv"] == 80.0
    assert tooth.settings()["filter"] == "Al 1mm"
    fish = parse_log(shared_data / "skyscan_logs" / "cichlids__104016__head__rec__104016_rec.log")
    assert fish.scanner == "SkyScan2214"
    assert fish.voxel_size_um == 13.00145
    assert fish.settings()["program_version"] == "2.1.0.1"
    assert (fish.first_section, fish.last_section, fish.prefix) == (301, 2189, "104016_rec")


@pytest.mark.realdata
def test_anonymised_real_log(shared_data: Path) -> None:
    log = parse_log(shared_data / "skyscan1278_mouse_thorax" / "Subject2_Day3.log")
    assert log.prefix == "Subject#_Day#_rec"
    assert log.voxel_size_um == 105.32
    assert (log.cs_min, log.cs_max) == (-0.007, 0.05)
    assert log.round_roi
    settings = log.settings()
    assert settings["smoothing_kernel"] == "2 (Gaussian)"
    assert settings["roi_mode"] == "ON_ROUND"
    assert log.get("Reconstruction", "Reconstruction servers") == "##############"


# --- synthetic logs ---------------------------------------------------------------------------

OLD_LOG = """[System]
Scanner=SkyScan1172
[User]
User Name=Jürgen
[Acquisition]
Filename Prefix=femur_07
Image Pixel Size (um)=    11.20
Source Voltage (kV)=  59
Object to Source (mm)=  95.0
Comment=rotation 0.4°, pixel 9 µm
Depth (bits)=16
[Reconstruction]
Program=NRecon
First Section=12
Last Section=300
Result File Type=BMP
Pixel Size (um)=8.99742
Mininum for CS to Image Conversion=-0.001500
Maximum for CS to Image Conversion=0.092000
Reconstruction from ROI=ON_ROUND
"""


def test_old_cp1252_crlf_log(tmp_path: Path) -> None:
    log = parse_log(_write(tmp_path / "femur_07_rec.log", OLD_LOG))
    assert log.get("User", "User Name") == "Jürgen"
    assert log.get("Acquisition", "Comment") == "rotation 0.4°, pixel 9 µm"
    assert log.voxel_size_um == 8.99742
    assert log.cs_min == -0.0015  # from the misspelt key
    assert log.get("Reconstruction", "Minimum for CS to Image Conversion") == "-0.001500"
    assert log.get("Reconstruction", "Mininum for CS to Image Conversion") == "-0.001500"
    assert log.prefix is None  # no [File name convention] in old logs
    assert log.index_length is None
    assert log.result_file_type == "bmp"
    assert log.round_roi
    assert log.settings()["reconstruction_program"] == "NRecon"  # 'Program' alias
    assert log.settings()["source_voltage_kv"] == 59.0


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
@pytest.mark.parametrize("encoding", ["cp1252", "utf-8"])
def test_line_ends_and_encodings(tmp_path: Path, newline: str, encoding: str) -> None:
    log = parse_log(_write(tmp_path / "a.log", OLD_LOG, encoding=encoding, newline=newline))
    assert log.get("Acquisition", "Comment") == "rotation 0.4°, pixel 9 µm"
    assert log.last_section == 300


def test_keys_and_sections_case_insensitive_first_wins(tmp_path: Path) -> None:
    text = (
        "stray line before any section=ignored\n"
        "[RECONSTRUCTION]\n"
        "this line has no equals sign\n"
        "  pixel   size (UM) =  12.5  \n"
        "Pixel Size (um)=99\n"
        "Note=a=b\n"
        "=no key\n"
    )
    log = parse_log(_write(tmp_path / "b.log", text))
    assert log.sections == {"RECONSTRUCTION": {"pixel size (um)": "12.5", "note": "a=b"}}
    assert log.voxel_size_um == 12.5
    assert log.get("reconstruction", "PIXEL SIZE (um)") == "12.5"
    assert log.get("Reconstruction", "absent", "dflt") == "dflt"
    assert log.get("Nope", "Pixel Size (um)") is None
    assert log.scanner is None and log.cs_min is None and not log.round_roi


def test_tiff_and_jpeg_spellings_canonicalised(tmp_path: Path) -> None:
    for raw, ext in [("TIFF", "tif"), ("TIF", "tif"), ("JPG", "jpg"), ("jpeg", "jpg")]:
        log = SkyscanLog(path=None, sections={"Reconstruction": {"result file type": raw}})
        assert log.result_file_type == ext


def test_not_a_number_names_log_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.log", "[Reconstruction]\nPixel Size (um)=####\n")
    log = parse_log(path)
    with pytest.raises(ScanError, match=r"c\.log: \[Reconstruction\] Pixel Size \(um\)='####'"):
        _ = log.voxel_size_um
    assert log.settings()["voxel_size_um"] == "####"  # provenance keeps what the log says


def test_missing_log(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match=r"nothing\.log: cannot read log"):
        parse_log(tmp_path / "nothing.log")


def test_binary_file_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"BM\x00\x01\x02[System]\nScanner=x\n")
    with pytest.raises(ScanError, match=r"x\.log: not a SkyScan log \(binary content\)"):
        parse_log(path)


@pytest.mark.parametrize("text", ["", "just some text\nno sections\n", "[System]\n[User]\n"])
def test_text_without_sections_is_not_a_log(tmp_path: Path, text: str) -> None:
    with pytest.raises(ScanError, match=r"y\.log: not a SkyScan log \(no \[section\]"):
        parse_log(_write(tmp_path / "y.log", text))


def test_why_a_log_is_not_a_reconstruction_log(tmp_path: Path) -> None:
    scan_log = parse_log(_write(tmp_path / "a.log", "[System]\nScanner=x\n[Acquisition]\nA=1\n"))
    assert not scan_log.is_reconstruction_log
    assert scan_log.reconstruction_problem == "has no [Reconstruction] section"
    sub_scan = parse_log(_write(tmp_path / "a~00.log", "[Reconstruction]\nPseudo-parallel=1\n"))
    assert not sub_scan.is_reconstruction_log
    assert sub_scan.reconstruction_problem == (
        "its [Reconstruction] section has none of Pixel Size (um), First Section, Result File "
        "Type, Sections Count (a sub-scan log)"
    )
    rec = parse_log(_write(tmp_path / "a_rec.log", "[reconstruction]\nPixel Size (um)=9\n"))
    assert rec.is_reconstruction_log and rec.reconstruction_problem is None
