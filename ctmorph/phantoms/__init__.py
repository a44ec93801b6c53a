"""Analytic test volumes (:mod:`.shapes`) and the synthetic rat-femur sample study (:mod:`.femur`)."""

from .shapes import (
    ball,
    cube_with_cavity,
    grey_from_mask,
    plates,
    random_spheres,
    random_trabecular,
    rod_lattice,
    tilted_plates,
    torus,
)

__all__ = [
    "ball",
    "cube_with_cavity",
    "grey_from_mask",
    "plates",
    "random_spheres",
    "random_trabecular",
    "rod_lattice",
    "tilted_plates",
    "torus",
]
