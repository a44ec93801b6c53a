"""Slice file names of a reconstruction folder: ``<prefix><index>.<ext>``, ``*_spr.*``
previews, and the canonical spelling of an extension."""

from __future__ import annotations

import re

__all__ = ["IMAGE_EXTS", "IMAGE_RE", "PREVIEW_RE", "EXT_CANON", "canon_ext"]

IMAGE_EXTS = ("bmp", "tif", "tiff", "png", "jpg", "jpeg")
IMAGE_RE = re.compile(r"^(.*?)(\d+)\.(" + "|".join(IMAGE_EXTS) + r")$", re.IGNORECASE)
PREVIEW_RE = re.compile(r"_spr\.[a-z]+$", re.IGNORECASE)
EXT_CANON = {"tiff": "tif", "jpeg": "jpg"}


def canon_ext(ext: str) -> str:
    ext = ext.lower()
    return EXT_CANON.get(ext, ext)
