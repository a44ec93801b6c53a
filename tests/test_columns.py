"""The column registry (ctmorph/columns.py) is the one list of columns: every column a scan's
row holds is in it and every entry is a column some run writes; its pointers lead somewhere
(the code imports, the test exists, the flag is an option of ``ctmorph analyze``); the README's
Definitions table and the measuring modules' unit tables are generated from it."""

from __future__ import annotations

import ast
import importlib
import runpy
from functools import cache
from pathlib import Path

import pytest

from ctmorph.calibration import Calibration, save_calibration
from ctmorph.cli import analyze
from ctmorph.columns import COLUMN_BY_NAME, COLUMNS, MORPHOMETRY_PARAMETERS, describe, main
from ctmorph.config import AnalysisConfig
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.morphometry import CORTICAL_COLUMNS, TRABECULAR_COLUMNS
from ctmorph.phantoms.femur import make_femur
from ctmorph.pipeline import analyze_scan

ROOT = Path(__file__).resolve().parents[1]
#: Columns a scan's own row does not hold: the batch adds the group, the sensitivity table
#: its two columns.
NOT_IN_A_SCAN_ROW = {"group", "threshold_change_pct", "threshold_unit"}
#: Columns whose numbers are measured (not bookkeeping): each needs a test against truth.
MEASURED = {c.name for c in COLUMNS if c.code.startswith("ctmorph.morphometry.")}


@pytest.fixture(scope="module")
def femur_row(tmp_path_factory):
    """The row of a small calibrated femur with a trabecular and a cortical VOI (~3 s)."""
    f = make_femur(group="OVX", seed=4, shape_yx=(96, 96), voxel_um=20.0, length_mm=2.8,
                   distal_first=False, round_roi=True)
    tmp = tmp_path_factory.mktemp("columns")
    write_nrecon_folder(tmp / "F04_rec", f.grey, voxel_size_um=f.voxel_um, round_roi=True)
    cal = save_calibration(Calibration(slope=12.0, intercept=-0.2, r_squared=1.0),
                           tmp / "calibration.json")
    cfg = AnalysisConfig(threshold=132.0, roi_offset_mm=0.5, roi_height_mm=1.0,
                         calibration=str(cal), cortical_offset_mm=0.8, cortical_height_mm=0.3)
    row = analyze_scan(tmp / "F04_rec", cfg)
    assert row["status"] == "ok", row["error"]
    return row


def test_every_column_of_a_row_is_registered_and_every_entry_is_written(femur_row):
    assert [k for k in femur_row if k not in COLUMN_BY_NAME] == []
    assert {c.name for c in COLUMNS} - set(femur_row) == NOT_IN_A_SCAN_ROW


def test_names_are_unique_and_parameters_registered():
    assert len(COLUMN_BY_NAME) == len(COLUMNS)
    assert set(MORPHOMETRY_PARAMETERS) <= set(COLUMN_BY_NAME)


def test_measuring_modules_take_their_units_from_the_registry():
    for table in (TRABECULAR_COLUMNS, CORTICAL_COLUMNS):
        for name, (unit, description) in table.items():
            assert (unit, description) == (COLUMN_BY_NAME[name].unit,
                                           COLUMN_BY_NAME[name].description)


def _resolve(dotted: str):
    """The object at ``dotted`` as a reader finds it: attributes first (a package's function
    before its submodule of the same name), importing submodules where needed."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[:i]))
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.name)
def test_code_pointer_imports(column):
    assert column.code, f"{column.name}: no code pointer"
    assert column.code.startswith("ctmorph.") and not any(
        p.startswith("_") for p in column.code.split(".")), column.code  # public names only
    target = _resolve(column.code)
    assert callable(target) or isinstance(target, property), column.code


@cache
def _test_functions(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                     and n.name.startswith("test_"))


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.name)
def test_test_pointers_exist(column):
    if column.name in MEASURED:
        assert column.tests, f"{column.name} is measured but names no test"
    for pointer in column.tests:
        path, _, func = pointer.partition("::")
        assert path.startswith("tests/test_") and (ROOT / path).is_file(), pointer
        assert func in _test_functions(path), pointer


def test_flag_pointers_are_options_of_analyze():
    options = {o for p in analyze.params for o in p.opts}
    wrong = {c.name: f for c in COLUMNS for f in c.flags if f not in options}
    assert wrong == {}


def test_readme_definitions_table_is_generated_from_the_registry():
    script = runpy.run_path(str(ROOT / "scripts" / "update_readme_columns.py"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script["with_table"](readme) == readme, \
        "README.md is out of date: run scripts/update_readme_columns.py"
    for c in COLUMNS:
        assert f"| `{c.name}` |" in readme


def test_describe_leads_from_a_name_to_code_test_and_flag(capsys):
    text = describe("Tb.Sp")
    assert "ctmorph.morphometry.trabecular_morphometry" in text
    assert "--thickness-convention" in text and "tests/test_morphometry_phantoms.py" in text
    assert main(["Conn.D", "BMD"]) == 0
    out = capsys.readouterr().out
    assert "1/mm³" in out and "g/cm³ HA" in out and "--calibration" in out
    assert main(["Tb.Nope"]) == 1
    assert "not a column: Tb.Nope" in capsys.readouterr().err
