"""The groups file (``analyze --groups``): read as carefully as the manifest (issue 14 item 6)."""

from __future__ import annotations

import pickle
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctmorph.cli import cli
from ctmorph.errors import ConfigError
from ctmorph.manifest import GroupTable, normalize_name, read_groups

NFC = unicodedata.normalize("NFC", "Fémur_03")
NFD = unicodedata.normalize("NFD", "Fémur_03")


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _raises(path: Path, message: str):
    """pytest.raises for the exact message ``<path>: <message>``."""
    return pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {message}") + "$")


# ---------------------------------------------------------------------------------------------
# what is read


def test_comments_blank_lines_extra_columns_and_line_numbers(tmp_path):
    g = _write(tmp_path / "groups.csv",
               "# OVX study, batch 1\n"
               "\n"
               " Scan , GROUP ,notes,\n"
               "F01_rec, sham ,left femur,\n"
               "# F02 rescanned\n"
               ",,,\n"
               "F02_rec,OVX,,\n")
    groups = read_groups(g)
    assert isinstance(groups, GroupTable) and isinstance(groups, Mapping)
    assert groups == {"F01_rec": "sham", "F02_rec": "OVX"}  # compares like a dict
    assert list(groups) == ["F01_rec", "F02_rec"] and len(groups) == 2
    assert groups.get("F03_rec") is None and "F01_rec" in groups
    assert groups.line("F01_rec") == 4 and groups.line("F02_rec") == 7
    assert groups.path == g and groups.path.is_absolute()
    with pytest.raises(KeyError):
        groups.line("F03_rec")
    with pytest.raises(TypeError):
        groups["F03_rec"] = "sham"  # read-only
    assert pickle.loads(pickle.dumps(groups)) == groups  # goes to worker processes


def test_utf8_bom_and_quoted_cells(tmp_path):
    g = _write(tmp_path / "g.csv", '\ufeffscan,group\n"F01_rec","OVX, treated"\n')
    assert read_groups(g) == {"F01_rec": "OVX, treated"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_with_a_byte_order_mark(tmp_path, encoding):
    text = "scan,group\r\nT1,sham\r\nT2,OVX+Exös\r\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # Python writes no BOM for an explicit byte order
    (tmp_path / "g.csv").write_bytes(data)
    assert read_groups(tmp_path / "g.csv") == {"T1": "sham", "T2": "OVX+Exös"}


def test_excel_unicode_text_is_utf16_and_tab_separated(tmp_path):
    g = _write(tmp_path / "g.txt", "scan\tgroup\r\nT1\tsham\r\nT2\tOVX, treated\r\n", "utf-16")
    groups = read_groups(g)
    assert groups == {"T1": "sham", "T2": "OVX, treated"}
    assert groups.line("T2") == 3


def test_nfd_and_nfc_spellings_are_one_name(tmp_path):
    assert NFC != NFD and normalize_name(NFD) == NFC
    assert normalize_name(" a ") == " a "  # only the Unicode form changes
    g = _write(tmp_path / "g.csv", f"scan,group\n{NFD},sh\u0061\u0300m\n")
    groups = read_groups(g)
    assert list(groups) == [NFC] and groups[NFC] == "sh\u00e0m"
    assert groups[NFD] == "sh\u00e0m" and groups.line(NFD) == 2  # lookups normalise too
    twice = _write(tmp_path / "twice.csv", f"scan,group\n{NFC},sham\n{NFD},OVX\n")
    with _raises(twice, f"line 3, column 'scan': scan '{NFC}' is listed twice (first on "
                        f"line 2)"):
        read_groups(twice)


# ---------------------------------------------------------------------------------------------
# errors: file, line and column, one line each


@pytest.mark.parametrize(("text", "message"), [
    ("scan,group\nT0,sham\nT1,\n", "line 3, column 'group': empty group for scan 'T1'"),
    ("scan,group\nT0,sham\nT1\n", "line 3, column 'group': empty group for scan 'T1'"),
    ("scan,group\nT0,sham\n,OVX\n", "line 3, column 'scan': empty scan name"),
    ("scan,group\nT0,sham\nT1,\"OVX\nT2,sham\nT3,sham\n",
     "line 3, column 2: the quoted field starting here is never closed (a missing '\"')"),
    ('scan,group\n"T0\n",sham\nT1,"OVX\n',
     "line 4, column 2: the quoted field starting here is never closed (a missing '\"')"),
    ('scan,group\nT0,"sh"am\n', "line 2: not valid CSV (',' expected after '\"')"),
    ('scan,group\nT0,"sh"am\nT1,"OVX\n', "line 2: not valid CSV (',' expected after '\"')"),
    ("scan,group\n# T1 left out\nT0,sham\nT0,OVX\n",
     "line 4, column 'scan': scan 'T0' is listed twice (first on line 3)"),
    ("scan,group\nT0,OVX, treated\n",
     "line 2: 3 cells but the header on line 1 has 2 columns (a cell holding a comma needs "
     "double quotes)"),
    ("name,arm\nT0,sham\n", "line 1: the groups file needs the columns 'scan,group', found "
                            "name, arm"),
    ("\n# scan,group\n", "the groups file is empty (needs a header 'scan,group')"),
    ("scan,group\n# none yet\n", "the groups file lists no scan"),
    ("scan,group,Group\nT0,sham,OVX\n", "line 1, column 3: column 'group' appears twice"),
])
def test_errors_name_file_line_and_column(tmp_path, text, message):
    g = _write(tmp_path / "groups.csv", text)
    with _raises(g, message):
        read_groups(g)


def test_not_utf8_says_where_and_what_to_do(tmp_path):
    g = tmp_path / "groups.csv"
    g.write_bytes("scan,group\nT1,sham\nF\xe9mur,OVX\n".encode("latin-1"))
    with _raises(g, "not UTF-8 text (byte 0xe9 at offset 20); save it as CSV UTF-8"):
        read_groups(g)
    g.write_bytes(b"\xef\xbb\xbfscan,group\nT\xff,sham\n")  # the offset counts the BOM
    with _raises(g, "not UTF-8 text (byte 0xff at offset 15); save it as CSV UTF-8"):
        read_groups(g)


def test_utf16_without_a_byte_order_mark_is_refused(tmp_path):
    g = tmp_path / "groups.csv"
    g.write_bytes("scan,group\nT1,sham\n".encode("utf-16-le"))
    with _raises(g, "not UTF-8 text (byte 0x00 at offset 1; UTF-16 without a byte-order "
                    "mark?); save it as CSV UTF-8"):
        read_groups(g)


def test_broken_utf16(tmp_path):
    g = tmp_path / "groups.csv"
    g.write_bytes(b"\xff\xfe" + "scan,group\n".encode("utf-16-le") + b"\x00\xd8\x41\x00")
    with _raises(g, "not UTF-16 text (byte 0x00 at offset 24); save it as CSV UTF-8"):
        read_groups(g)


def test_unreadable(tmp_path):
    with _raises(tmp_path / "missing.csv",
                 "cannot read the groups file (No such file or directory)"):
        read_groups(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------
# through the CLI: exit 1, one line, nothing written


@pytest.mark.parametrize(("text", "message"), [
    ("scan,group\nT0,sham\nT1,\n", "line 3, column 'group': empty group for scan 'T1'"),
    ("scan,group\nT0,sham\nT1,\"OVX\nT2,sham\n",
     "line 3, column 2: the quoted field starting here is never closed (a missing '\"')"),
])
def test_cli_bad_groups_file_exit_1_nothing_written(tmp_path, monkeypatch, text, message):
    _write(tmp_path / "groups.csv", text)
    (tmp_path / "scans").mkdir()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["analyze", "scans", "--groups", "groups.csv", "-o", "out"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert errors == [f"Error: groups.csv: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.csv", "scans"]
