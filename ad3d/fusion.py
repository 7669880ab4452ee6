"""2D <-> 3D correspondence for organised scans (MVTec 3D-AD, RGB-D): the xyz image, the colour image
and the valid-pixel mask resized to a network's input grid, and values carried between image patches
and the scan's points through each point's pixel (`grid_index`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ad3d.errors import ConfigError
from ad3d.types import Scan


def _organised(scan: Scan) -> tuple[int, int]:
    if not scan.is_organised:
        raise ConfigError(f"'{scan.path or 'the scan'}' is not organised (no pixel grid): 2D-3D fusion needs one")
    return scan.grid_shape


@dataclass(frozen=True)
class Resized:
    """An organised scan at `size` x `size` (nearest neighbour, as M3DM resizes): xyz (S, S, 3) with
    zeros where no point lands, rgb (S, S, 3) uint8 or None, valid (S, S) bool."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    valid: np.ndarray


def nearest_rows(size: int, height: int) -> np.ndarray:
    """The source row (or column) each of `size` output rows takes under nearest-neighbour resizing, as
    torch's `interpolate(mode="nearest")` picks it (M3DM and MuSc-V2 resize organised clouds so)."""
    return np.minimum(np.floor(np.arange(size) * (height / size)), height - 1).astype(np.int64)


def resize(scan: Scan, size: int) -> Resized:
    h, w = _organised(scan)
    xyz = np.zeros((h * w, 3), np.float32)
    xyz[scan.grid_index] = scan.points
    valid = np.zeros(h * w, bool)
    valid[scan.grid_index] = True
    rows, cols = nearest_rows(size, h), nearest_rows(size, w)
    pick = (rows[:, None] * w + cols[None, :]).reshape(-1)
    rgb = None
    if scan.image is not None:
        rgb = scan.image.reshape(h * w, -1)[pick].reshape(size, size, -1)
    return Resized(xyz[pick].reshape(size, size, 3), rgb, valid[pick].reshape(size, size))


def patch_of_points(scan: Scan, grid: int) -> np.ndarray:
    """(N,) index of the patch (row-major on a grid x grid layout over the whole image) holding each point."""
    h, w = _organised(scan)
    rows, cols = np.divmod(scan.grid_index, w)
    return (rows * grid // h) * grid + cols * grid // w


def points_to_patches(scan: Scan, values: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-point values (N,) or (N, C) averaged per patch: ((grid, grid[, C]) means, (grid, grid) counts);
    patches without a point hold 0."""
    patch = patch_of_points(scan, grid)
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    sums = np.zeros((grid * grid, flat.shape[1]))
    np.add.at(sums, patch, flat)
    counts = np.bincount(patch, minlength=grid * grid)
    means = sums / np.maximum(counts, 1)[:, None]
    shape = (grid, grid) + values.shape[1:]
    return means.reshape(shape).astype(np.float32), counts.reshape(grid, grid)


def pooled_patches(resized: Resized, values: np.ndarray, patches: int) -> np.ndarray:
    """M3DM's point tokens (feature_extractors/multiple_features.py): per-point values (n_valid, C) of a
    resized scan's valid pixels (row-major) laid on its zero-filled S x S grid, averaged over 3 x 3 windows
    (S - 2 square) and pooled adaptively to patches x patches. (patches^2, C); empty pixels dilute edges."""
    import torch
    import torch.nn.functional as F

    size = resized.valid.shape[0]
    flat = torch.zeros(values.shape[1], size * size)
    flat[:, torch.from_numpy(np.flatnonzero(resized.valid.reshape(-1)))] = torch.as_tensor(
        values, dtype=torch.float32
    ).T
    grid = F.adaptive_avg_pool2d(F.avg_pool2d(flat.reshape(1, -1, size, size), 3, stride=1), patches)[0]
    return grid.reshape(grid.shape[0], -1).T.numpy()


def map_to_points(scan: Scan, patch_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A patch map (h, w) upsampled bilinearly to the scan's image: ((H, W) image map, (N,) point values)."""
    import torch
    import torch.nn.functional as F

    h, w = _organised(scan)
    full = F.interpolate(
        torch.as_tensor(np.asarray(patch_map, np.float32))[None, None],
        size=(h, w),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    return full, full.reshape(-1)[scan.grid_index]
