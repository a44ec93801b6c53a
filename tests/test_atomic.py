import pytest

from ctmorph._atomic import atomic_path, atomic_write_text


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "morphometry.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["morphometry.csv"]
