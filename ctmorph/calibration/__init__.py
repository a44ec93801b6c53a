"""Density calibration: grey ↔ attenuation ↔ g/cm³ HA and the HA-rod phantom fit (BMD and TMD
are measures: :mod:`ctmorph.morphometry.density`).

Bruker SkyScan labs scan hydroxyapatite (HA) rods of known density (typically 0.25 and
0.75 g/cm³ HA) with the same acquisition and reconstruction settings as the bones, and use
them to turn the reconstructed attenuation into mineral density (Bouxsein et al. 2010).

Two linear steps, kept apart on purpose:

1. **grey -> attenuation**, per scan, through the scan's own log window ``Minimum/Maximum for
   CS to Image Conversion`` = ``(cs_min, cs_max)``: ``att = cs_min + grey / gmax * (cs_max -
   cs_min)``, ``gmax`` = 255 (8-bit) or 65535 (16-bit). NRecon chooses the window per
   reconstruction, so the same grey value means different attenuations in different scans.
2. **attenuation -> density**, one line for the study, fitted on the phantom rods:
   ``density = slope * att + intercept`` (g/cm³ HA).

The fit is therefore made on attenuation, never on raw grey, and phantoms and bones may have
been reconstructed with different windows and bit depths.

Units. "Attenuation" here is the reconstructed linear attenuation coefficient in NRecon's CS
units, i.e. the units of the window values written in the log (CT-Analyser shows the same
numbers as "attenuation coefficient"). ctmorph never converts that unit: calibration and
samples come from the same NRecon, so it cancels. Because those values depend on the voxel size
as well as on kV, filter, beam-hardening correction, smoothing and ring correction, a calibration
only applies to scans with the same settings (:data:`CHECKED_SETTINGS`, :func:`check_settings`).

Round-ROI reconstructions (``ON_ROUND``): exact zeros are "no data" and never enter a mean.
"""

from .convert import (
    attenuation_to_grey,
    density_to_grey,
    grey_to_attenuation,
    grey_to_density,
    scan_window,
)
from .fit import calibrate
from .model import (
    Calibration,
    RodMeasurement,
    load_calibration,
    parse_densities,
    save_calibration,
)
from .rods import find_rods
from .settings import CHECKED_SETTINGS, check_settings

__all__ = [
    "CHECKED_SETTINGS",
    "Calibration",
    "RodMeasurement",
    "calibrate",
    "find_rods",
    "check_settings",
    "grey_to_attenuation",
    "attenuation_to_grey",
    "grey_to_density",
    "density_to_grey",
    "scan_window",
    "parse_densities",
    "save_calibration",
    "load_calibration",
]
