"""Benchmark loaders by name: `load(format, root, category, split)` and `categories(format, root)`.

Formats: mvtec3d, real3d, anomaly-shapenet, folder. Each yields Scans with `label`, per-point
`labels` and `defect_type` on the test split. Nothing here ever writes into a dataset folder.
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from pathlib import Path
from types import ModuleType

from ad3d.datasets import anomaly_shapenet, folder, mvtec3d, real3d
from ad3d.datasets.base import Dataset, SampleRef, transfer_labels
from ad3d.errors import Ad3dError, DatasetError
from ad3d.types import Scan

_FORMATS: dict[str, ModuleType] = {
    "mvtec3d": mvtec3d,
    "real3d": real3d,
    "anomaly-shapenet": anomaly_shapenet,
    "folder": folder,
}
__all__ = [
    "FORMATS",
    "Dataset",
    "SampleRef",
    "load",
    "categories",
    "describe",
    "verify",
    "transfer_labels",
    "guess_format",
]
FORMATS = tuple(_FORMATS)


def _module(format: str) -> ModuleType:
    try:
        return _FORMATS[format.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}") from None


def _root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.exists():
        raise DatasetError(f"dataset root '{path}' does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset root '{path}' is not a directory")
    return path


def guess_format(root: str | os.PathLike) -> str:
    """The benchmark layout of `root`, from its folders alone: MVTec 3D-AD (an `xyz` folder per defect
    type), Anomaly-ShapeNet (`pcd/` or `new_pcd/`, or a `GT` folder per category), Real3D-AD (a `gt`
    folder per category). Raises DatasetError when no layout or several fit."""
    path = _root(root)
    if any(path.glob("*/*/*/xyz")):
        return "mvtec3d"
    if any((path / name).is_dir() for name in anomaly_shapenet.COLLECTIONS):
        return "anomaly-shapenet"
    labels = {p.name for p in path.glob("*/*") if p.is_dir() and p.name.lower() == "gt"}
    if labels == {"GT"}:
        return "anomaly-shapenet"
    if labels == {"gt"}:
        return "real3d"
    raise DatasetError(f"cannot tell the layout of '{path}' from its folders; give --format ({', '.join(FORMATS)})")


def categories(format: str, root: str | os.PathLike) -> list[str]:
    """Category names found under `root` (by listing folders, never a hard-coded table)."""
    return _module(format).categories(_root(root))


def load(format: str, root: str | os.PathLike, category: str, split: str = "test", **options) -> Dataset:
    """A lazy Dataset of one category's scans; `options` go to the format's loader."""
    module = _module(format)
    unknown = set(options) - set(inspect.signature(module.load).parameters)
    if unknown:
        raise DatasetError(
            f"the {format} loader takes no option {', '.join(sorted(unknown))} (preprocess=plane is for mvtec3d)"
        )
    return module.load(_root(root), category, split, **options)


def describe(format: str, root: str | os.PathLike) -> list[dict]:
    """Per category: scans per split and test scans per defect type, from file names alone."""
    mod = _module(format)
    out = []
    for cat in categories(format, root):
        row: dict = {"category": cat}
        for split in mod.SPLITS:
            try:
                ds = load(format, root, cat, split)
            except DatasetError:
                row[split] = 0
                continue
            row[split] = len(ds)
            if split == "test":
                row["defects"] = dict(sorted(Counter(r.defect_type for r in ds.refs).items()))
        out.append(row)
    return out


def gt_problems(scan: Scan, gt_path, max_gt_distance: float = 1e-4) -> list[str]:
    """What is wrong with a test scan's ground truth: an anomalous scan with no defective point, a GT
    file whose row count differs from the scan's points, or a point far from its matched GT row."""
    problems = []
    if scan.label == 1 and scan.labels is not None and not scan.labels.any():
        problems.append(f"'{scan.path}': anomalous scan with no defective point in its GT")
    rows, dist = scan.meta.get("gt_rows"), scan.meta.get("gt_max_distance")
    if rows is not None and rows != len(scan):
        problems.append(f"'{gt_path}': {rows} GT rows for {len(scan)} scan points")
    if dist is not None and dist > max_gt_distance:
        problems.append(f"'{gt_path}': a scan point lies {dist:.3g} from its nearest GT row")
    return problems


def verify(
    format: str, root: str | os.PathLike, *, progress: bool = False, max_gt_distance: float = 1e-4
) -> list[dict]:
    """Read every file of a local copy; per category count scans and list each problem found.

    Problems: a split that cannot be listed (missing GT, no training scans), a file that does not read,
    an empty scan, a GT file whose rows are not the scan's points (row count differs, or a point is
    more than `max_gt_distance` from its matched row), and anomalous scans with no defective point.
    """
    from tqdm import tqdm

    mod = _module(format)
    report = []
    for cat in categories(format, root):
        row = {"category": cat, "scans": 0, "anomalous": 0, "problems": []}
        for split in mod.SPLITS:
            try:
                ds = load(format, root, cat, split)
            except Ad3dError as e:
                if split != "validation":
                    row["problems"].append(f"{split}: {e}")
                continue
            for ref in tqdm(ds.refs, desc=f"{cat}/{split}", disable=not progress, leave=False):
                row["scans"] += 1
                try:
                    scan = ds._load(ref)
                except Ad3dError as e:
                    row["problems"].append(str(e))
                    continue
                row["anomalous"] += scan.label == 1
                row["problems"] += gt_problems(scan, ref.gt_path, max_gt_distance)
        report.append(row)
    return report
