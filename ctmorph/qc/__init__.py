"""QC a person can trust: pictures of where the VOI went (:mod:`.pictures`), the pictures a
paper figure is built from (:mod:`.figure_pictures`) and flags for implausible results
(:mod:`.flags`)."""

from .figure_pictures import FIGURE_JSON, SECTION_PICTURE, RenderedView
from .flags import (
    MIN_PLATE_END_DISTANCE_MM,
    MIN_VOI_HEIGHT_FRACTION,
    PLATE_MODEL_RATIO,
    RAT_BVTV_PERCENT,
    RAT_TBSP_MM,
    RAT_TBTH_MM,
    qc_flags,
)
from .pictures import (
    AxialQc,
    QcData,
    ReviewViews,
    axial_overlay,
    write_qc_overview,
    write_qc_pictures,
    write_review_views,
)

__all__ = [
    "AxialQc",
    "QcData",
    "ReviewViews",
    "RenderedView",
    "FIGURE_JSON",
    "SECTION_PICTURE",
    "write_review_views",
    "qc_flags",
    "axial_overlay",
    "write_qc_pictures",
    "write_qc_overview",
    "RAT_BVTV_PERCENT",
    "RAT_TBTH_MM",
    "RAT_TBSP_MM",
    "PLATE_MODEL_RATIO",
    "MIN_PLATE_END_DISTANCE_MM",
    "MIN_VOI_HEIGHT_FRACTION",
]
