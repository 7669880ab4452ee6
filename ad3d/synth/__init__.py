"""Defect simulation: plant labelled defects on clean scans, and write whole benchmark-layout datasets."""

from ad3d.synth.dataset import LAYOUTS, make_dataset
from ad3d.synth.defects import DEFECTS, GEOMETRIC, plant, surface_normals

__all__ = ["DEFECTS", "GEOMETRIC", "LAYOUTS", "plant", "surface_normals", "make_dataset"]
