"""The allocator settings the CLI applies to its own process: glibc only, a no-op elsewhere."""

from __future__ import annotations

import sys

import pytest

from ctmorph import _memory


def test_configure_allocator_applies_on_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc-only")
    assert _memory.configure_allocator() is True


def test_configure_allocator_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(_memory.sys, "platform", "darwin")
    assert _memory.configure_allocator() is False


def test_the_cli_applies_it(monkeypatch):
    from click.testing import CliRunner

    from ctmorph import cli

    calls = []
    monkeypatch.setattr(cli, "configure_allocator", lambda: calls.append(1) or True)
    result = CliRunner().invoke(cli.cli, ["analyze", "--help"])
    assert result.exit_code == 0 and calls == [1]
