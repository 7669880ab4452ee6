"""Read any scan file into a Scan and write results back out (formats chosen by suffix).

`read_scan(path)` handles .pcd .ply .obj .stl .off .xyz .txt .csv .pts .tif(f), and a depth .png when
`intrinsics=` is given. `write_scan(path, scan, scalars=...)` writes .ply (binary) or .pcd.
"""

from __future__ import annotations

import os
from pathlib import Path

from ad3d.errors import ScanFormatError
from ad3d.io._common import check_readable, fail
from ad3d.io.depth import read_intrinsics, read_rgbd
from ad3d.io.mesh import load_trimesh, read_mesh, sample_surface
from ad3d.io.pcd import read_pcd, write_pcd
from ad3d.io.ply import read_ply, write_ply
from ad3d.io.text import read_table, read_text
from ad3d.io.tiff import read_tiff, read_xyz_tiff, valid_pixels
from ad3d.types import Scan

SCAN_SUFFIXES = (".pcd", ".ply", ".obj", ".stl", ".off", ".xyz", ".txt", ".csv", ".pts", ".tif", ".tiff")
_MESH_SUFFIXES = (".obj", ".stl", ".off")
_TEXT_SUFFIXES = (".xyz", ".txt", ".csv", ".pts")

__all__ = [
    "ScanFormatError",
    "SCAN_SUFFIXES",
    "read_scan",
    "write_scan",
    "read_pcd",
    "read_ply",
    "read_mesh",
    "read_text",
    "read_table",
    "read_tiff",
    "read_xyz_tiff",
    "valid_pixels",
    "read_rgbd",
    "read_intrinsics",
    "load_trimesh",
    "sample_surface",
    "write_pcd",
    "write_ply",
]


def read_scan(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    remove_invalid: bool = True,
    sample: int | None = None,
    seed: int = 0,
    intrinsics=None,
    color=None,
) -> Scan:
    """Read one scan file as a Scan, picking the reader by suffix unless `format` names one.

    sample: for meshes, draw this many area-weighted surface points instead of returning vertices.
    remove_invalid: drop NaN (missing) points; when False, a file holding any raises ScanFormatError.
    intrinsics / color: for a depth image (.png), the camera JSON and the optional colour image.
    Raises ScanFormatError naming the file for anything missing, malformed, truncated or unknown.
    """
    p = Path(path)
    fmt = p.suffix.lower() if format == "auto" else "." + format.lower().lstrip(".")
    check_readable(p)
    if sample is not None and fmt not in _MESH_SUFFIXES + (".ply",):
        raise fail(p, "sample= applies to meshes (.obj .stl .off .ply) only")
    if fmt == ".pcd":
        scan = read_pcd(p, remove_invalid=remove_invalid)
    elif fmt == ".ply":
        scan = read_ply(p, remove_invalid=remove_invalid, sample=sample, seed=seed)
    elif fmt in _MESH_SUFFIXES:
        scan = read_mesh(p, sample=sample, seed=seed)
    elif fmt in _TEXT_SUFFIXES:
        scan = read_text(p, remove_invalid=remove_invalid)
    elif fmt in (".tif", ".tiff"):
        scan = read_tiff(p)
    elif fmt == ".png" and intrinsics is not None:
        scan = read_rgbd(p, intrinsics, color)
    elif fmt == ".png":
        raise fail(p, "a .png is read as a depth image only with intrinsics= (use ad3d.io.read_rgbd)")
    else:
        raise fail(p, f"unknown scan format {fmt or '(no suffix)'!r}; known: {' '.join(SCAN_SUFFIXES)}")
    return scan


def write_scan(path: str | os.PathLike, scan: Scan, scalars: dict | None = None) -> None:
    """Write a scan (with optional per-point float scalars such as `score`) as .ply or .pcd.

    The file appears only once fully written, so a failure never leaves a partial output behind.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        write_ply(path, scan, scalars)
    elif suffix == ".pcd":
        write_pcd(path, scan, scalars)
    else:
        raise ScanFormatError(f"cannot write '{path}': unknown output format {suffix!r} (use .ply or .pcd)")
