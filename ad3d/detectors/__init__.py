"""Detectors: `create(name, **params)`, `available()`, `load(path)`; see base.Detector for the protocol."""

from ad3d.detectors.base import Detector
from ad3d.detectors.model_file import load
from ad3d.detectors.regions import extract_regions
from ad3d.detectors.registry import available, create, preset, register

__all__ = ["Detector", "available", "create", "load", "preset", "register", "extract_regions"]
