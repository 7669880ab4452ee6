"""What every benchmark loader shares: a lazy Dataset of Scans and ground-truth label transfer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ad3d.errors import DatasetError
from ad3d.types import Scan

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives on disk and what its folder/name says about it (nothing read yet)."""

    path: Path
    label: int | None
    defect_type: str | None
    gt_path: Path | None = None
    extra: dict = field(default_factory=dict)


class Dataset(Sequence):
    """A sized, indexable, iterable collection of Scans; each file is read only when accessed."""

    def __init__(
        self,
        format: str,
        root: Path,
        category: str,
        split: str,
        refs: list[SampleRef],
        load: Callable[[SampleRef], Scan],
    ):
        self.format, self.root, self.category, self.split = format, Path(root), category, split
        self.refs = refs
        self._load = load

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._load(self.refs[i])

    def __iter__(self) -> Iterator[Scan]:
        for ref in self.refs:
            yield self._load(ref)

    def __repr__(self) -> str:
        return (
            f"Dataset(format={self.format!r}, category={self.category!r}, split={self.split!r}, "
            f"scans={len(self)}, anomalous={sum(r.label == 1 for r in self.refs)})"
        )


def check_split(split: str, available: tuple[str, ...], format: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split not in available:
        raise DatasetError(
            f"{format} has no {split!r} split (it has {', '.join(available)}); hold out some training scans instead"
        )


def check_category(root: Path, category: str, known: list[str], format: str) -> Path:
    if category not in known:
        raise DatasetError(
            f"no category {category!r} in '{root}' ({format}); found: {', '.join(known) if known else 'none'}"
        )
    return root / category


def list_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def files(folder: Path, suffixes: tuple[str, ...], pattern: str = "*") -> list[Path]:
    """Files of `folder` matching `pattern` with one of `suffixes`, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes)


def read_gt_rows(path: Path) -> np.ndarray:
    """A ground-truth text file of `x y z label` rows (comma- or space-separated) as (N, 4) floats."""
    from ad3d.io import read_table
    from ad3d.io._common import fail

    table = read_table(path)
    if table.shape[1] != 4:
        raise fail(path, f"ground-truth rows must be 'x y z label', found {table.shape[1]} columns")
    if not np.isin(table[:, 3], (0.0, 1.0)).all():
        raise fail(path, "ground-truth labels must be 0 or 1")
    return table


def transfer_labels(points: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-point labels for `points` from GT rows in any order, by nearest neighbour.

    Returns (labels uint8, largest distance from a point to its matched GT row); that distance is 0
    when the GT file holds exactly the scan's points, and shows how far off a mismatched file is.
    """
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(gt[:, :3]).query(points, k=1, workers=-1)
    return gt[idx, 3].astype(np.uint8), float(dist.max()) if len(dist) else 0.0


def load_point_sample(ref: SampleRef, category: str, format: str) -> Scan:
    """Read one point-cloud sample and attach what its name and GT file say (Real3D, ASN, folder).

    Training scans (label None) get no labels; normal test scans get all zeros; anomalous ones get
    their GT file's labels, or none when the dataset has no GT file for them.
    """
    from ad3d.io import read_scan

    scan = read_scan(ref.path)
    scan = scan.replace(
        label=ref.label, category=category, defect_type=ref.defect_type, meta={**scan.meta, "dataset": format}
    )
    if ref.label is None or (ref.label == 1 and ref.gt_path is None):
        return scan
    return attach_gt(scan, ref.gt_path)


def attach_gt(scan: Scan, gt_path: Path | None) -> Scan:
    """Labels from a GT text file (or all zeros without one), recording the GT match distance."""
    if gt_path is None:
        return scan.replace(labels=np.zeros(len(scan), np.uint8))
    gt = read_gt_rows(gt_path)
    labels, max_dist = transfer_labels(scan.points, gt)
    meta = {**scan.meta, "gt_path": str(gt_path), "gt_rows": int(len(gt)), "gt_max_distance": max_dist}
    return scan.replace(labels=labels, meta=meta)


def missing_gt_error(missing: list[Path]) -> DatasetError:
    """One error naming every anomalous test scan whose GT file is missing (the first few by name)."""
    shown = ", ".join(p.name for p in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return DatasetError(
        f"{len(missing)} anomalous test scan{'s' if len(missing) > 1 else ''} "
        f"{'have' if len(missing) > 1 else 'has'} no GT file in '{missing[0].parent}': {shown}"
    )
