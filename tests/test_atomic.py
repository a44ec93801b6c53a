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


def test_written_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
