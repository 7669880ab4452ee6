"""Anomaly-ShapeNet: `<cat>/train/<cat>_template<k>.pcd`, `<cat>/test/<cat>_<type><k>.pcd`, `<cat>/GT/*.txt`.

v2 puts the categories under `<root>/pcd/` (meshes under `<root>/obj/`) and the ten categories added
later under `<root>/new_pcd/`; v1 has them directly under the root: all are found. Normal test scans
are named `positive`. GT rows are `x,y,z,label` (comma- or space-separated) and need not follow the
PCD's point order: labels are matched by nearest neighbour. Known misspellings in released file names
(`crak`) are mapped to the defect's real name.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from ad3d.datasets.base import (
    Dataset,
    SampleRef,
    check_category,
    check_split,
    files,
    list_dirs,
    load_point_sample,
    missing_gt_error,
)
from ad3d.errors import DatasetError

FORMAT = "anomaly-shapenet"
SPLITS = ("train", "test")
NAME_QUIRKS = {"crak": "crack"}


COLLECTIONS = ("pcd", "new_pcd")  # v2: the first 40 categories, then the 10 added later


def category_folders(root: Path) -> dict[str, Path]:
    """Each category's folder: under `<root>/pcd` and `<root>/new_pcd` in the v2 layout, else under root."""
    bases = [root / name for name in COLLECTIONS if (root / name).is_dir()] or [root]
    found: dict[str, Path] = {}
    for base in bases:
        for c in list_dirs(base):
            if c not in found and ((base / c / "train").is_dir() or (base / c / "test").is_dir()):
                found[c] = base / c
    return found


def categories(root: Path) -> list[str]:
    return sorted(category_folders(root))


def defect_type(stem: str, category: str) -> str:
    """`vase0_bulge3` -> bulge, `vase0_positive2` -> good, `cap0_crak1` -> crack."""
    rest = stem[len(category) + 1 :] if stem.startswith(category + "_") else stem.split("_", 1)[-1]
    name = re.sub(r"\d+$", "", rest).strip("_").lower() or "unknown"
    return "good" if name == "positive" else NAME_QUIRKS.get(name, name)


def _gt_folder(base: Path) -> Path:
    for name in ("GT", "gt"):
        if (base / name).is_dir():
            return base / name
    return base / "GT"


def load(root: Path, category: str, split: str = "test", *, train_glob: str = "*template*") -> Dataset:
    check_split(split, SPLITS, FORMAT)
    folders = category_folders(root)
    check_category(root, category, sorted(folders), FORMAT)
    base = folders[category]
    refs: list[SampleRef] = []
    missing: list[Path] = []
    if split == "train":
        refs = [SampleRef(p, None, None) for p in files(base / "train", (".pcd",), train_glob + ".pcd")]
        if not refs:
            raise DatasetError(f"no training scans matching {train_glob} in '{base / 'train'}'")
    else:
        gt_dir = _gt_folder(base)
        for p in files(base / "test", (".pcd",)):
            kind = defect_type(p.stem, category)
            label = 0 if kind == "good" else 1
            gt = gt_dir / f"{p.stem}.txt"
            if label == 1 and not gt.exists():
                missing.append(gt)
            refs.append(SampleRef(p, label, kind, gt if label == 1 else None))
    if missing:
        raise missing_gt_error(missing)
    return Dataset(FORMAT, root, category, split, refs, partial(load_point_sample, category=category, format=FORMAT))
