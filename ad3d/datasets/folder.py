"""Any folder of scans: `[<cat>/]train/good/*`, `[<cat>/]validation/good/*`, `[<cat>/]test/<type>/*`.

Scans may be any format read_scan knows. Optional ground truth: `gt/<type>/<stem>.txt` holding
`x y z label` rows (matched to the points by nearest neighbour). Test scans under `good` are normal,
every other folder is a defect type. A root that itself holds train/ or test/ is one category,
named after the folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ad3d.datasets.base import Dataset, SampleRef, check_category, check_split, files, list_dirs, load_point_sample
from ad3d.errors import DatasetError

FORMAT = "folder"
SPLITS = ("train", "validation", "test")


def _is_category(path: Path) -> bool:
    return any((path / s).is_dir() for s in SPLITS)


def categories(root: Path) -> list[str]:
    if _is_category(root):
        return [root.resolve().name]
    return [c for c in list_dirs(root) if _is_category(root / c)]


def _category_dir(root: Path, category: str) -> Path:
    if _is_category(root) and root.resolve().name == category:
        return root
    return check_category(root, category, categories(root), FORMAT)


def load(root: Path, category: str, split: str = "test") -> Dataset:
    from ad3d.io import SCAN_SUFFIXES

    check_split(split, SPLITS, FORMAT)
    base = _category_dir(root, category)
    if not (base / split).is_dir():
        raise DatasetError(f"'{base}' has no {split}/ folder")
    refs = []
    for kind in list_dirs(base / split):
        label = 0 if kind == "good" else 1
        for p in files(base / split / kind, SCAN_SUFFIXES):
            gt = base / "gt" / kind / f"{p.stem}.txt"
            refs.append(SampleRef(p, label if split == "test" else 0, kind, gt if gt.exists() else None))
    if not refs:
        raise DatasetError(f"no scans under '{base / split}'")
    return Dataset(FORMAT, root, category, split, refs, partial(load_point_sample, category=category, format=FORMAT))
