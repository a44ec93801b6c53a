"""The options of ``ctmorph analyze`` that are analysis settings come from AnalysisConfig:
one table (ctmorph/cli_options.py) for name, type and help, the dataclass for the default."""

from __future__ import annotations

import dataclasses

import click
from click.testing import CliRunner

from ctmorph.cli import analyze, cli
from ctmorph.cli_options import CONFIG_OPTIONS
from ctmorph.config import AnalysisConfig

FIELDS = {f.name: f for f in dataclasses.fields(AnalysisConfig)}
#: Settings without an option of their own: placed per scan by --overrides, or fixed.
NO_OPTION = {"voi_first_slice", "voi_last_slice", "min_bone_voxels", "min_marrow_voxels",
             "context_mm"}


def _params() -> dict[str, click.Parameter]:
    return {p.name: p for p in analyze.params}


def test_every_setting_has_an_option_or_is_listed_as_having_none():
    assert set(CONFIG_OPTIONS) <= set(FIELDS)
    assert set(FIELDS) - set(CONFIG_OPTIONS) == NO_OPTION


def test_options_take_the_name_and_default_of_their_setting():
    params = _params()
    for field, opt in CONFIG_OPTIONS.items():
        p = params[field]  # the click parameter is named after the field
        assert p.opts == [opt.name]
        assert p.default == FIELDS[field].default, field
        assert bool(p.show_default) == (FIELDS[field].default is not None and not p.is_flag), field


def test_help_shows_the_dataclass_defaults():
    ctx = click.Context(analyze)
    params = _params()
    for field, opt in CONFIG_OPTIONS.items():
        decl, text = params[field].get_help_record(ctx)
        assert decl.startswith(opt.name) and text.startswith(opt.help), field
        default = FIELDS[field].default
        if default is None or isinstance(default, bool):
            assert "[default:" not in text, text
        else:
            assert text.endswith(f"[default: {default}]"), text
    out = CliRunner().invoke(cli, ["analyze", "--help"]).output
    assert out.count("[default:") == 11  # the ten settings above and --jobs
