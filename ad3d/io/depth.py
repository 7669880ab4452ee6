"""RGB-D frames: a 16-bit depth image plus pinhole intrinsics -> an organised xyz scan in metres."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ad3d.io._common import check_readable, fail
from ad3d.types import Scan


def read_intrinsics(path) -> dict:
    """fx, fy, cx, cy, width, height from Open3D's JSON (column-major `intrinsic_matrix`) or flat keys."""
    path = check_readable(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(path, f"intrinsics file is not valid JSON ({e})") from None
    try:
        if "intrinsic_matrix" in doc:
            k = np.asarray(doc["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # stored column-major
            out = {"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}
        else:
            out = {key: float(doc[key]) for key in ("fx", "fy", "cx", "cy")}
        out.update(width=int(doc["width"]), height=int(doc["height"]))
    except (KeyError, ValueError, TypeError) as e:
        raise fail(path, f"intrinsics need width, height and intrinsic_matrix or fx/fy/cx/cy ({e})") from None
    if out["fx"] <= 0 or out["fy"] <= 0:
        raise fail(path, "intrinsics have a non-positive focal length")
    return out


def _read_image(path, mode_check) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = check_readable(path)
    try:
        with Image.open(path) as im:
            arr = mode_check(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise fail(path, f"not a readable image ({e})") from None
    return arr


def read_rgbd(
    depth_path, intrinsics, color_path=None, *, depth_scale: float = 1000.0, depth_trunc: float | None = None
) -> Scan:
    """Back-project a depth image (raw units / depth_scale = metres) through the intrinsics.

    `intrinsics` is a JSON path or a dict with fx fy cx cy width height. The colour image, when given,
    must have the depth image's size; it becomes `Scan.image` and the per-point `colors`.
    """
    intr = intrinsics if isinstance(intrinsics, dict) else read_intrinsics(intrinsics)
    depth = _read_image(depth_path, lambda im: np.asarray(im)).astype(np.float64)
    if depth.ndim != 2:
        raise fail(depth_path, f"depth image must be single-channel, found shape {depth.shape}")
    h, w = depth.shape
    if (w, h) != (intr["width"], intr["height"]):
        raise fail(depth_path, f"depth image is {w}x{h} but the intrinsics are for {intr['width']}x{intr['height']}")
    z = depth / depth_scale
    valid = z > 0
    if depth_trunc is not None:
        valid &= z < depth_trunc
    if not valid.any():
        raise fail(depth_path, "depth image has no valid (non-zero) pixels")
    v, u = np.nonzero(valid)
    zz = z[v, u]
    points = np.stack([(u - intr["cx"]) * zz / intr["fx"], (v - intr["cy"]) * zz / intr["fy"], zz], axis=1)
    image = colors = None
    if color_path is not None:
        image = _read_image(color_path, lambda im: np.asarray(im.convert("RGB")))
        if image.shape[:2] != (h, w):
            raise fail(color_path, f"colour image is {image.shape[1]}x{image.shape[0]}, depth image is {w}x{h}")
        colors = image[v, u]
    return Scan(
        points=points,
        colors=colors,
        image=image,
        grid_index=v * w + u,
        grid_shape=(h, w),
        units="m",
        path=str(Path(depth_path)),
        meta={"format": "rgbd", "invalid_points": int((~valid).sum())},
    )
