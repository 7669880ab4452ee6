"""Real3D-AD: `<cat>/train/*.pcd` prototypes, `<cat>/test/<n>_<type>.pcd`, `<cat>/gt/<stem>.txt`.

Training files are globbed by name: the dataset README says `*_prototype.pcd` while the official
loader globs `*template*`; both are accepted by default. A test scan is normal iff `good` is in its
name; anomalous ones have a GT file of `x y z label` rows, matched to the PCD points by nearest
neighbour (Scan.meta['gt_max_distance'] records how well they matched).
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

FORMAT = "real3d"
SPLITS = ("train", "test")
TRAIN_GLOBS = ("*template*", "*prototype*")


def categories(root: Path) -> list[str]:
    return [c for c in list_dirs(root) if (root / c / "train").is_dir() or (root / c / "test").is_dir()]


def defect_type(stem: str) -> str:
    """`12_bulge` -> bulge, `3_sink_cut` -> sink, `7_good` -> good (the id and copy/cut tags dropped)."""
    words = [w for w in re.split(r"[_\-]", stem.lower()) if w and not w.isdigit()]
    for known in ("good", "bulge", "sink"):
        if known in words:
            return known
    return "_".join(words) or "unknown"


def load(root: Path, category: str, split: str = "test", *, train_globs: tuple[str, ...] = TRAIN_GLOBS) -> Dataset:
    check_split(split, SPLITS, FORMAT)
    base = check_category(root, category, categories(root), FORMAT)
    refs: list[SampleRef] = []
    missing: list[Path] = []
    if split == "train":
        paths = sorted({p for g in train_globs for p in files(base / "train", (".pcd",), g + ".pcd")})
        refs = [SampleRef(p, None, None) for p in paths]
        if not refs:
            raise DatasetError(f"no training scans matching {', '.join(train_globs)} in '{base / 'train'}'")
    else:
        for p in files(base / "test", (".pcd",)):
            label = 0 if "good" in p.stem.lower() else 1
            gt = base / "gt" / f"{p.stem}.txt"
            if label == 1 and not gt.exists():
                missing.append(gt)
            refs.append(SampleRef(p, label, defect_type(p.stem), gt if label == 1 else None))
    if missing:
        raise missing_gt_error(missing)
    return Dataset(FORMAT, root, category, split, refs, partial(load_point_sample, category=category, format=FORMAT))
