"""The options of ``ctmorph analyze`` that are analysis settings, made from
:class:`~ctmorph.config.AnalysisConfig`, and the option types of every command.

Each setting with an option has one entry in :data:`CONFIG_OPTIONS` (option name, click type,
help); its default comes from the dataclass field, so it is written once, in
``ctmorph/config.py``. :func:`config_options` turns the table into click options (the click
parameter is named after the field); :func:`checked_settings` and :func:`make_config` turn
the parsed values back into an ``AnalysisConfig`` after the usage rules that span several
options. Only the CLI imports this module (``tests/test_layering.py``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import ALIGN_MODES, DISTAL_ENDS, ROI_MODES, THICKNESS_CONVENTIONS, AnalysisConfig
from .errors import ConfigError

__all__ = [
    "CONFIG_OPTIONS",
    "FINITE",
    "NON_NEGATIVE",
    "POSITIVE",
    "ConfigOption",
    "GreyThreshold",
    "InputFile",
    "Number",
    "checked_settings",
    "config_options",
    "make_config",
]

F = TypeVar("F", bound=Callable[..., Any])


class Number(click.ParamType):
    """A finite float, optionally bounded: the type of every numeric option.

    ``click.FloatRange`` lets ``nan`` through (every comparison with it is false) and accepts
    ``inf``; this one refuses both, so a wrong number is a usage error (exit 2) naming the
    option as typed, never a library error naming a setting.

    Parameters
    ----------
    min, max : float, optional
        Bounds (None: unbounded).
    min_open, max_open : bool
        Exclude the bound itself.
    what : str, optional
        What the error message says is expected (default: derived from the bounds).
    """

    name = "float"

    def __init__(
        self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
        max_open: bool = False, what: str | None = None,
    ) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open
        self.what = what or self._describe()

    def _describe(self) -> str:
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return (f"a finite number in {'(' if self.min_open else '['}{lo:g}, "
                    f"{hi:g}{')' if self.max_open else ']'}")
        if lo is not None:
            return f"a finite number {'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"a finite number {'<' if self.max_open else '<='} {hi:g}"
        return "a finite number"

    def _in_range(self, x: float) -> bool:
        lo, hi = self.min, self.max
        return ((lo is None or (x > lo if self.min_open else x >= lo))
                and (hi is None or (x < hi if self.max_open else x <= hi)))

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        """``value`` as a float, or a usage error naming the option."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not (math.isfinite(x) and self._in_range(x)):
            self.fail(f"expected {self.what}, got {value!r}", param, ctx)
        return x


class GreyThreshold(Number):
    """``otsu`` or a grey value (finite, >= 0)."""

    name = "threshold"

    def __init__(self) -> None:
        super().__init__(0, what="a grey value or 'otsu' (grey values are finite and >= 0)")

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | str:
        """``"otsu"`` or the grey value."""
        if isinstance(value, str) and value.strip().lower() == "otsu":
            return "otsu"
        return super().convert(value, param, ctx)


class InputFile(click.Path):
    """An existing, non-empty file (a folder, a missing or a 0-byte file: exit 2)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        """The path, checked."""
        path = super().convert(value, param, ctx)
        if os.path.getsize(path) == 0:
            self.fail(f"File {click.format_filename(path)!r} is empty (0 bytes).", param, ctx)
        return path


FINITE = Number()
NON_NEGATIVE = Number(0)
POSITIVE = Number(0, min_open=True)


def _resolved(path: Path | None) -> str | None:
    """A file option as the settings keep it: an absolute path, so the saved settings (and
    their digest) do not depend on the folder the command was run from."""
    return str(path.resolve()) if path is not None else None


@dataclass(frozen=True)
class ConfigOption:
    """How one :class:`~ctmorph.config.AnalysisConfig` field is given on the command line.

    Attributes
    ----------
    name : str
        The option as typed, e.g. ``"--smooth-sigma"``.
    type : click.ParamType or None
        Its click type (None for a flag).
    help : str
        Its help text.
    metavar : str or None
        What ``--help`` shows for its value (None: click's default).
    to_setting : callable or None
        Turns the parsed value into the setting (None: taken as it is).
    """

    name: str
    type: click.ParamType | None
    help: str
    metavar: str | None = None
    to_setting: Callable[[Any], Any] | None = None


#: ``AnalysisConfig`` field -> its option of ``ctmorph analyze``, in ``--help`` order. Fields
#: left out have no option (``voi_first_slice``/``voi_last_slice`` come from ``--overrides``).
CONFIG_OPTIONS: dict[str, ConfigOption] = {
    "threshold": ConfigOption(
        "--threshold", GreyThreshold(), metavar="GREY|otsu",
        help="Global grey threshold, or 'otsu' on the pooled histogram of all scans."),
    "roi": ConfigOption(
        "--roi", click.Choice(list(ROI_MODES)),
        help="auto: growth-plate referenced trabecular VOI; full: the whole volume; "
             "envelope: the region inside the specimen's outer surface (cores, vertebrae, "
             "other bones); mask: a user-drawn mask (--roi-mask)."),
    "roi_mask": ConfigOption(
        "--roi-mask", click.Path(exists=True, path_type=Path), to_setting=_resolved,
        help="VOI mask: a multi-page TIFF or a folder of TIFF slices, the scan's shape, "
             "nonzero inside (implies --roi mask)."),
    "roi_offset_frac": ConfigOption(
        "--roi-offset-frac", Number(0, 1, max_open=True),
        help="VOI start proximal of the growth-plate reference as a fraction of the bone "
             "length (--roi auto; the scan must hold the whole bone; replaces "
             "--roi-offset-mm)."),
    "roi_height_frac": ConfigOption(
        "--roi-height-frac", Number(0, 1, min_open=True),
        help="VOI length as a fraction of bone length (replaces --roi-height-mm)."),
    "roi_offset_mm": ConfigOption(
        "--roi-offset-mm", NON_NEGATIVE,
        help="VOI start proximal of the growth-plate reference (mm)."),
    "roi_height_mm": ConfigOption("--roi-height-mm", POSITIVE, help="VOI length (mm)."),
    "distal_end": ConfigOption(
        "--distal-end", click.Choice(list(DISTAL_ENDS)),
        help="Which end of the stack is distal."),
    "ref_slice": ConfigOption(
        "--ref-slice", click.IntRange(min=0),
        help="The growth-plate reference section of the one scan analysed, given by hand "
             "(--roi auto; numbered as the slice files are); the VOI is placed from it."),
    "align": ConfigOption(
        "--align", click.Choice(list(ALIGN_MODES)),
        help="auto: resample a femur tilted >= 3° in slices perpendicular to its axis (the "
             "angle is reported either way); off: use the slices as they are."),
    "voxel_size_um": ConfigOption(
        "--voxel-size", POSITIVE,
        help="Voxel size in µm (for TIFF stacks without a log; overrides the log)."),
    "smooth_sigma_vox": ConfigOption(
        "--smooth-sigma", NON_NEGATIVE,
        help="Gaussian smoothing sigma before thresholding (voxels)."),
    "thickness_convention": ConfigOption(
        "--thickness-convention", click.Choice(THICKNESS_CONVENTIONS),
        help="Local thickness convention (see README, 'Definitions')."),
    "calibration": ConfigOption(
        "--calibration", InputFile(), to_setting=_resolved,
        help="CALIB.json from 'ctmorph calibrate': adds BMD and TMD (g/cm³ HA)."),
    "threshold_density": ConfigOption(
        "--threshold-density", FINITE,
        help="Global threshold in g/cm³ HA (needs --calibration; replaces --threshold)."),
    "threshold_attenuation": ConfigOption(
        "--threshold-attenuation", FINITE, metavar="MU",
        help="Global threshold in attenuation (NRecon CS units, as in the log's CS-to-image "
             "window), converted to grey per scan through its own window (replaces "
             "--threshold)."),
    "tmd_erosion_vox": ConfigOption(
        "--tmd-erosion-vox", NON_NEGATIVE,
        help="TMD leaves out bone within this many voxels of the surface."),
    "strict_calibration": ConfigOption(
        "--strict", None,
        help="Fail instead of warning: scans whose reconstruction settings differ from the "
             "calibration's, and groups-file rows naming scans that are not in the run."),
    "cortical_offset_mm": ConfigOption(
        "--cortical-offset-mm", NON_NEGATIVE,
        help="Also measure cortical bone in a diaphyseal VOI this far proximal of the "
             "growth-plate reference (mm)."),
    "cortical_height_mm": ConfigOption(
        "--cortical-height-mm", POSITIVE, help="Length of the cortical VOI (mm)."),
    "save_maps": ConfigOption(
        "--save-maps", None,
        help="Write thickness/separation maps of the VOI (TIFF, mm) for Fiji."),
}


def config_options(func: F) -> F:
    """Decorate a click command with one option per :data:`CONFIG_OPTIONS` entry.

    Each option's default is its field's default in :class:`~ctmorph.config.AnalysisConfig`
    (shown in ``--help`` unless it is None or the option is a flag); the click parameter is
    named after the field, so the command receives the settings under their field names.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(AnalysisConfig)}
    for field, opt in reversed(CONFIG_OPTIONS.items()):
        default = defaults[field]
        kwargs: dict[str, Any] = {"help": opt.help, "default": default}
        if opt.type is None:
            kwargs["is_flag"] = True
        else:
            kwargs.update(type=opt.type, show_default=default is not None)
            if opt.metavar is not None:
                kwargs["metavar"] = opt.metavar
        func = click.option(opt.name, field, **kwargs)(func)
    return func


def _given(ctx: click.Context, field: str) -> bool:
    return ctx.get_parameter_source(field) != click.core.ParameterSource.DEFAULT


def _roi_mode(ctx: click.Context, s: Mapping[str, Any]) -> str:
    """The VOI mode after the --roi-* usage rules (exit 2 on a conflict)."""
    roi = s["roi"]
    if s["roi_mask"] is not None:
        if _given(ctx, "roi") and roi != "mask":
            raise click.UsageError(f"--roi-mask needs --roi mask, got --roi {roi}")
        roi = "mask"
    elif roi == "mask":
        raise click.UsageError("--roi mask needs --roi-mask FILE")
    offset_frac, height_frac = s["roi_offset_frac"], s["roi_height_frac"]
    for name, value in (("--roi-offset-frac", offset_frac), ("--roi-height-frac", height_frac)):
        if value is not None and roi != "auto":
            raise click.UsageError(f"{name} places the VOI along the bone: needs --roi auto, "
                                   f"got --roi {roi}")
    if offset_frac is not None and height_frac is not None and offset_frac + height_frac > 1:
        raise click.UsageError(
            f"--roi-offset-frac + --roi-height-frac must be <= 1 (the VOI ends inside the "
            f"bone), got {offset_frac:g} + {height_frac:g}"
        )
    if s["cortical_offset_mm"] is not None and roi != "auto":
        raise click.UsageError(f"--cortical-offset-mm places a VOI from the growth plate: needs "
                               f"--roi auto, got --roi {roi}")
    return roi


def _check_threshold(ctx: click.Context, s: Mapping[str, Any]) -> None:
    """At most one way of stating the threshold (exit 2 on a conflict)."""
    if s["threshold_density"] is not None:
        if s["calibration"] is None:
            raise click.UsageError("--threshold-density needs --calibration")
        if _given(ctx, "threshold"):
            raise click.UsageError("give either --threshold or --threshold-density, not both")
    if s["threshold_attenuation"] is not None:
        if _given(ctx, "threshold"):
            raise click.UsageError("give either --threshold or --threshold-attenuation, not both")
        if s["threshold_density"] is not None:
            raise click.UsageError(
                "give either --threshold-density or --threshold-attenuation, not both"
            )


def checked_settings(ctx: click.Context, options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given by :func:`config_options`' options, after the usage rules that span
    several options.

    Parameters
    ----------
    ctx : click.Context
        The command's context (which options were given, not defaulted).
    options : mapping
        The command's parsed option values by parameter name (other keys are ignored).

    Returns
    -------
    dict
        ``AnalysisConfig`` keyword arguments: ``roi`` is ``mask`` when only ``--roi-mask``
        was given, files are absolute paths.

    Raises
    ------
    click.UsageError
        Options that conflict (``--roi-mask`` with another ``--roi``, two thresholds, ...):
        exit 2.
    """
    values = {f: options[f] for f in CONFIG_OPTIONS}
    values["roi"] = _roi_mode(ctx, values)
    _check_threshold(ctx, values)
    for field, opt in CONFIG_OPTIONS.items():
        if opt.to_setting is not None:
            values[field] = opt.to_setting(values[field])
    return values


def make_config(settings: Mapping[str, Any]) -> AnalysisConfig:
    """The analysis settings; the options are checked already, so a refusal here is a usage
    error all the same (exit 2), never a failed run.

    Raises
    ------
    click.UsageError
        The settings refuse a combination (the message names the setting).
    """
    try:
        return AnalysisConfig(**settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
