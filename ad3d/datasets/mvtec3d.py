"""MVTec 3D-AD: `<cat>/{train,validation}/good/{xyz,rgb}` and `<cat>/test/<type>/{xyz,rgb,gt}`.

xyz/NNN.tiff is an organised (H, W, 3) float cloud (zeros = missing), rgb/NNN.png the colour image
and gt/NNN.png the defect mask; the real masks store class ids (253-255), so a pixel is defective
iff its value is > 0. Optional background-plane removal is cached outside the dataset folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ad3d.datasets.base import Dataset, SampleRef, check_category, check_split, files, list_dirs
from ad3d.errors import DatasetError
from ad3d.types import Scan

FORMAT = "mvtec3d"
SPLITS = ("train", "validation", "test")
PREPROCESS = ("none", "plane")


def categories(root: Path) -> list[str]:
    return [c for c in list_dirs(root) if any((root / c / s).is_dir() for s in SPLITS)]


def _read_png(path: Path, colour: bool) -> np.ndarray:
    """A PNG as (H, W, 3) uint8 RGB (colour) or (H, W) grey values (a mask), whatever mode it was saved in:
    palette images through their palette (not their indices), 16-bit grey scaled to 8 bits, alpha dropped."""
    from PIL import Image, UnidentifiedImageError

    from ad3d.io._common import check_readable, fail

    check_readable(path)
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):  # 16- or 32-bit grey
                grey = np.asarray(im).astype(np.int64)
                if not colour:
                    return grey
                eight = (grey >> 8 if grey.max() > 255 else grey).clip(0, 255).astype(np.uint8)
                return np.repeat(eight[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB" if colour else "L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise fail(path, f"not a readable PNG ({e})") from None


def _load(ref: SampleRef, category: str, preprocess: str) -> Scan:
    from ad3d.io import read_xyz_tiff, valid_pixels
    from ad3d.io._common import fail

    xyz = read_xyz_tiff(ref.path)
    h, w = xyz.shape[:2]
    valid = valid_pixels(xyz).ravel()
    grid_index = np.flatnonzero(valid)
    image = colors = mask = None
    rgb_path = ref.extra.get("rgb")
    if rgb_path is not None:
        image = _read_png(rgb_path, colour=True)
        if image.shape[:2] != (h, w):
            raise fail(rgb_path, f"rgb image is {image.shape[1]}x{image.shape[0]}, xyz is {w}x{h}")
        colors = image.reshape(-1, 3)[grid_index]
    if ref.gt_path is not None:
        gt = _read_png(ref.gt_path, colour=False)
        if gt.shape != (h, w):
            raise fail(ref.gt_path, f"gt mask is {gt.shape[1]}x{gt.shape[0]}, xyz is {w}x{h}")
        mask = gt > 0
    elif ref.label == 0:
        mask = np.zeros((h, w), bool)
    labels = None if mask is None else mask.ravel()[grid_index].astype(np.uint8)
    scan = Scan(
        points=xyz.reshape(-1, 3)[grid_index],
        colors=colors,
        image=image,
        grid_index=grid_index,
        grid_shape=(h, w),
        labels=labels,
        mask=mask,
        label=ref.label,
        category=category,
        defect_type=ref.defect_type,
        path=str(ref.path),
        meta={"format": FORMAT, "invalid_points": int((~valid).sum())},
    )
    if preprocess == "plane":
        from ad3d.cache import cached_array, content_key
        from ad3d.preprocess import background_plane_keep

        key = content_key([ref.path], {"step": "plane", "version": 1})
        scan = scan.subset(cached_array("mvtec3d-plane", key, lambda: background_plane_keep(scan)))
    return scan


def load(root: Path, category: str, split: str = "test", *, preprocess: str = "none") -> Dataset:
    """Scans of one category and split; `preprocess="plane"` removes the background plane."""
    check_split(split, SPLITS, FORMAT)
    if preprocess not in PREPROCESS:
        raise DatasetError(f"unknown MVTec 3D-AD preprocess {preprocess!r}; expected one of {PREPROCESS}")
    folder = check_category(root, category, categories(root), FORMAT) / split
    refs = []
    for defect in list_dirs(folder):
        base = folder / defect
        label = 0 if defect == "good" else 1
        for xyz in files(base / "xyz", (".tiff", ".tif")):
            rgb = base / "rgb" / f"{xyz.stem}.png"
            gt = base / "gt" / f"{xyz.stem}.png"
            if label == 1 and not gt.exists():
                raise DatasetError(f"'{xyz}' is a {defect} test scan but its mask '{gt}' is missing")
            refs.append(
                SampleRef(
                    xyz,
                    label if split == "test" else 0,
                    defect,
                    gt if gt.exists() else None,
                    {"rgb": rgb if rgb.exists() else None},
                )
            )
    return Dataset(FORMAT, root, category, split, refs, partial(_load, category=category, preprocess=preprocess))
