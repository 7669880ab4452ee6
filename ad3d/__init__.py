"""ad3d: anomaly detection for 3D scans and RGB-D of manufactured parts.

Submodules load on first use, so `import ad3d` stays light (no torch, open3d or pyvista import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = [
    "create",
    "available",
    "load",
    "io",
    "datasets",
    "metrics",
    "preprocess",
    "ops",
    "types",
    "errors",
    "Scan",
    "AnomalyResult",
    "DefectRegion",
]

from ad3d.errors import Ad3dError, ConfigError, DatasetError, ModelFormatError, ScanFormatError  # noqa: E402
from ad3d.types import AnomalyResult, DefectRegion, Scan  # noqa: E402

_LAZY = {"io", "datasets", "metrics", "preprocess", "ops", "types", "errors", "cli", "synth", "detectors", "viewers"}
_DETECTOR_API = {"create", "available", "load"}


def __getattr__(name: str):
    if name in _DETECTOR_API:
        return getattr(importlib.import_module("ad3d.detectors"), name)
    if name in _LAZY:
        return importlib.import_module(f"ad3d.{name}")
    raise AttributeError(f"module 'ad3d' has no attribute {name!r}")
