import pytest

from ctmorph.config import AnalysisConfig
from ctmorph.errors import ConfigError
from ctmorph.spacing import normalize_spacing


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": "triangle"}, "grey value or 'otsu'"),
        ({"threshold": float("nan")}, "finite grey value"),
        ({"roi": "box"}, "roi must be"),
        ({"distal_end": "top"}, "distal_end must be"),
        ({"align": "yes"}, "align must be 'auto' or 'off'"),
        ({"roi_offset_mm": -1.0}, "roi_offset_mm must be >= 0"),
        ({"roi_height_mm": 0.0}, "roi_height_mm must be > 0"),
        ({"smooth_sigma_vox": -0.5}, "smooth_sigma_vox"),
        ({"min_bone_voxels": -1}, "speck sizes"),
        ({"thickness_convention": "bonej"}, "thickness_convention must be one of"),
        ({"voxel_size_um": 0.0}, "voxel size must be a positive"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        AnalysisConfig(**changes)


def test_digest_is_stable_and_sensitive():
    a = AnalysisConfig()
    assert a.digest() == AnalysisConfig().digest()
    assert a.digest() != a.replace(threshold=90.0).digest()
    assert a.to_dict()["roi_offset_mm"] == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [((1, 2), "must have 3 values"), ((1, 0, 1), "positive and finite"), ("abc", "must be a")],
)
def test_normalize_spacing_rejects(value, message):
    with pytest.raises(ConfigError, match=message):
        normalize_spacing(value)


def test_normalize_spacing_scalar():
    assert normalize_spacing(0.009) == (0.009, 0.009, 0.009)
