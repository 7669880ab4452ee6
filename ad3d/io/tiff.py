"""MVTec 3D-AD organised point clouds: an (H, W, 3) float32 TIFF whose zero pixels are missing."""

from __future__ import annotations

import numpy as np

from ad3d.io._common import check_readable, fail
from ad3d.types import Scan


def read_xyz_tiff(path) -> np.ndarray:
    """The raw (H, W, 3) float array of an organised xyz TIFF, shape-checked."""
    import tifffile

    path = check_readable(path)
    try:
        xyz = tifffile.imread(str(path))
    except Exception as e:  # tifffile raises plain ValueError/struct.error/etc. on bad files
        raise fail(path, f"not a readable TIFF ({type(e).__name__}: {e})") from None
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise fail(path, f"organised xyz TIFF must be H x W x 3, found shape {xyz.shape}")
    if xyz.dtype.kind != "f":
        raise fail(path, f"organised xyz TIFF must hold floats, found {xyz.dtype}")
    if np.isinf(xyz).any():
        raise fail(path, f"{int(np.isinf(xyz).any(axis=2).sum())} pixels hold inf coordinates")
    return xyz


def valid_pixels(xyz: np.ndarray) -> np.ndarray:
    """(H, W) mask of measured pixels: every coordinate non-zero and not NaN (the MVTec convention)."""
    return np.all((xyz != 0) & ~np.isnan(xyz), axis=2)


def read_tiff(path) -> Scan:
    """Valid pixels of an organised xyz TIFF as points, keeping their place in the (H, W) grid."""
    xyz = read_xyz_tiff(path)
    valid = valid_pixels(xyz).ravel()
    if not valid.any():
        raise fail(path, f"no valid points (all {valid.size} pixels are zero or NaN)")
    flat = xyz.reshape(-1, 3)
    return Scan(
        points=flat[valid],
        grid_index=np.flatnonzero(valid),
        grid_shape=xyz.shape[:2],
        path=str(path),
        meta={"format": "tiff", "invalid_points": int((~valid).sum())},
    )
