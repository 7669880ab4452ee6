"""Detectors: `create(name, **params)`, `available()`, `load(path)`; see base.Detector for the protocol."""

from ad3d.detectors.base import Detector, available, create, load, preset, register
from ad3d.detectors.regions import extract_regions

__all__ = ["Detector", "available", "create", "load", "preset", "register", "extract_regions"]
