"""The allocator settings: glibc only, applied only to large scans in processes ctmorph owns."""

from __future__ import annotations

import sys

import pytest

from ctmorph import _memory, batch


def test_configure_allocator_applies_on_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc-only")
    assert _memory.configure_allocator() is True


def test_configure_allocator_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(_memory.sys, "platform", "darwin")
    assert _memory.configure_allocator() is False


def test_only_a_large_scan_fixes_the_thresholds(monkeypatch):
    calls = []
    monkeypatch.setattr(_memory, "configure_allocator", lambda: calls.append(1) or True)
    assert _memory.configure_for_scan(_memory.LARGE_SCAN_BYTES - 1) is False
    assert calls == []
    assert _memory.configure_for_scan(_memory.LARGE_SCAN_BYTES) is True
    assert calls == [1]


@pytest.mark.parametrize("tune", [False, True])
def test_the_allocator_is_tuned_only_when_the_caller_owns_the_process(
        tune, monkeypatch, tmp_path):
    from ctmorph.config import AnalysisConfig
    from ctmorph.io.writer import write_nrecon_folder
    from ctmorph.phantoms import grey_from_mask, random_trabecular

    mask = random_trabecular((40, 48, 48), bv_tv=0.25, scale=2.0, seed=0)
    write_nrecon_folder(tmp_path / "s0", grey_from_mask(mask, seed=0), voxel_size_um=10.0,
                        file_type="bmp")
    seen = []
    monkeypatch.setattr(batch.jobs, "configure_for_scan", seen.append)
    s = batch.run_analysis([tmp_path / "s0"], tmp_path / "out",
                           AnalysisConfig(roi="full", threshold=128.0), write_qc=False,
                           tune_allocator=tune)
    assert s.n_ok == 1
    # the library default never touches the allocator; with tune_allocator (the CLI) the
    # stack's size in bytes decides: 40 x 48 x 48 voxels of 8-bit BMP
    assert seen == ([40 * 48 * 48] if tune else [])


def test_the_cli_lets_the_run_tune_its_own_process(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from ctmorph import cli

    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(batch, "run_analysis", fake_run)
    scan = tmp_path / "s"
    scan.mkdir()
    CliRunner().invoke(cli.cli, ["analyze", str(scan), "-o", str(tmp_path / "out")])
    assert seen.get("tune_allocator") is True
