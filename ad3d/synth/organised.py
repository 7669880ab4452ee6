"""Organised RGB-D scans for the MVTec 3D-AD layout: a dense sampling of the part seen from +z.

Each pixel of an (H, W) grid keeps the surface point nearest the camera (an orthographic z-buffer),
so the xyz image has zeros where no surface is seen, as MVTec's scanner leaves them. Colours are a
per-part base colour shaded by the normal; the GT mask marks pixels whose visible point is defective.
"""

from __future__ import annotations

import numpy as np

from ad3d.types import Scan


class Projector:
    """A fixed orthographic camera over the part, shared by every scan of a category."""

    def __init__(self, template: np.ndarray, size: int):
        lo, hi = template.min(0), template.max(0)
        self.size = size
        self.span = float(max(hi[0] - lo[0], hi[1] - lo[1])) * 1.1
        self.corner = (lo[:2] + hi[:2]) / 2 - self.span / 2
        # MVTec marks a pixel missing when any coordinate is 0: keep every coordinate positive
        self.offset = -lo + 0.1 * float(np.linalg.norm(hi - lo))

    def project(self, scan: Scan, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xyz (H, W, 3) float32, rgb (H, W, 3) uint8, mask (H, W) bool) of the visible surface."""
        pts = scan.points.astype(np.float64)
        cell = (pts[:, :2] - self.corner) / self.span * self.size
        col, row = np.floor(cell[:, 0]).astype(int), np.floor(cell[:, 1]).astype(int)
        inside = (col >= 0) & (col < self.size) & (row >= 0) & (row < self.size)
        pixel = (row * self.size + col)[inside]
        idx = np.flatnonzero(inside)
        order = np.lexsort((-pts[idx, 2], pixel))  # per pixel, highest z (nearest the camera) first
        pixel, idx = pixel[order], idx[order]
        first = np.r_[True, pixel[1:] != pixel[:-1]]
        pixel, idx = pixel[first], idx[first]
        xyz = np.zeros((self.size * self.size, 3), np.float32)
        rgb = np.zeros((self.size * self.size, 3), np.uint8)
        mask = np.zeros(self.size * self.size, bool)
        xyz[pixel] = pts[idx] + self.offset
        rgb[pixel] = colors[idx]
        if scan.labels is not None:
            mask[pixel] = scan.labels[idx] > 0
        shape = (self.size, self.size)
        return xyz.reshape(shape + (3,)), rgb.reshape(shape + (3,)), mask.reshape(shape)


def shaded_colours(scan: Scan, base: np.ndarray) -> np.ndarray:
    """The base colour shaded by how much each normal faces the camera (+z)."""
    from ad3d.synth.defects import surface_normals

    light = 0.45 + 0.55 * np.abs(surface_normals(scan)[:, 2])
    return np.clip(base[None, :] * light[:, None], 0, 255).astype(np.uint8)
