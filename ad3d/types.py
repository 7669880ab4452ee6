"""Core value types: a Scan in, an AnomalyResult out (numpy arrays, immutable in spirit)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Units = Literal["mm", "m", "unit"]
Decision = Literal["accept", "reject", "review"]


def _check_rows(name: str, arr: np.ndarray | None, n: int, cols: int | None) -> None:
    if arr is None:
        return
    want = (n,) if cols is None else (n, cols)
    if arr.shape != want:
        raise ValueError(f"Scan.{name} has shape {arr.shape}, expected {want}")


@dataclass(frozen=True, eq=False)
class Scan:
    """One 3D scan: points plus whatever the source file or dataset knows about them.

    Per-point arrays (points, normals, colors, grid_index, labels and every entry of `fields`) share
    their first dimension N. Organised scans keep `grid_shape` (H, W) and `grid_index` (the flat pixel
    each point came from), so per-point scores can be written back into an image.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    image: np.ndarray | None = None
    grid_index: np.ndarray | None = None
    grid_shape: tuple[int, int] | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    label: int | None = None
    category: str | None = None
    defect_type: str | None = None
    path: str | None = None
    units: Units = "unit"
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        pts = np.ascontiguousarray(self.points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"Scan.points must have shape (N, 3), got {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"Scan.points holds {int((~np.isfinite(pts)).any(axis=1).sum())} NaN/inf points")
        object.__setattr__(self, "points", pts)
        n = len(pts)
        if self.normals is not None:
            object.__setattr__(self, "normals", np.asarray(self.normals, dtype=np.float32))
        if self.colors is not None:
            object.__setattr__(self, "colors", np.asarray(self.colors, dtype=np.uint8))
        if self.labels is not None:
            object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.uint8))
        if self.grid_index is not None:
            object.__setattr__(self, "grid_index", np.asarray(self.grid_index, dtype=np.int64))
        _check_rows("normals", self.normals, n, 3)
        _check_rows("colors", self.colors, n, 3)
        _check_rows("labels", self.labels, n, None)
        _check_rows("grid_index", self.grid_index, n, None)
        for key, arr in self.fields.items():
            if len(arr) != n:
                raise ValueError(f"Scan.fields[{key!r}] has {len(arr)} rows, expected {n}")
        if (self.grid_index is None) != (self.grid_shape is None):
            raise ValueError("Scan.grid_index and Scan.grid_shape go together")
        if self.units not in ("mm", "m", "unit"):
            raise ValueError(f"Scan.units must be 'mm', 'm' or 'unit', got {self.units!r}")

    def __len__(self) -> int:
        return len(self.points)

    @property
    def is_organised(self) -> bool:
        return self.grid_shape is not None

    def subset(self, index: np.ndarray) -> Scan:
        """A new Scan with only the points selected by `index` (integer indices or a boolean mask)."""

        def take(a):
            return None if a is None else a[index]

        return dataclasses.replace(
            self,
            points=self.points[index],
            normals=take(self.normals),
            colors=take(self.colors),
            grid_index=take(self.grid_index),
            labels=take(self.labels),
            fields={k: v[index] for k, v in self.fields.items()},
            meta=dict(self.meta),
        )

    def replace(self, **changes) -> Scan:
        """A new Scan with the given attributes changed (validated like a fresh one)."""
        return dataclasses.replace(self, **changes)

    def to_image(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter one value per point back into the (H, W) grid of an organised scan."""
        if self.grid_shape is None:
            raise ValueError("to_image needs an organised scan (grid_shape is None)")
        img = np.full(self.grid_shape[0] * self.grid_shape[1], fill, dtype=np.asarray(values).dtype)
        img[self.grid_index] = values
        return img.reshape(self.grid_shape)


@dataclass(frozen=True)
class DefectRegion:
    """Connected anomalous points of one scan, measured in the scan's own units."""

    indices: np.ndarray
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    extent: np.ndarray
    area: float
    max_score: float
    max_deviation: float | None = None  # signed, scan units: the largest departure from the nominal surface


@dataclass(frozen=True, eq=False)
class AnomalyResult:
    """What a detector says about one scan: a score per input point and one for the whole scan."""

    point_scores: np.ndarray
    object_score: float
    threshold: float | None = None
    is_anomalous: bool | None = None
    decision: Decision | None = None
    regions: list[DefectRegion] = field(default_factory=list)
    image_scores: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    point_decisions: np.ndarray | None = None  # per point 0 normal, 1 uncertain, 2 defective (once calibrated)
    alignment: dict | None = None  # transform onto the part's reference, residual, fitness, ok (aligning detectors)
    deviations: np.ndarray | None = None  # per point, signed distance to the nominal surface (scan units; deviation)

    def __post_init__(self) -> None:
        scores = np.asarray(self.point_scores, dtype=np.float32)
        if scores.ndim != 1:
            raise ValueError(f"AnomalyResult.point_scores must be 1-D, got shape {scores.shape}")
        object.__setattr__(self, "point_scores", scores)
        object.__setattr__(self, "object_score", float(self.object_score))
        if self.decision not in (None, "accept", "reject", "review"):
            raise ValueError(f"AnomalyResult.decision must be accept/reject/review, got {self.decision!r}")


def diagonal(points: np.ndarray) -> float:
    """The length of the points' bounding-box diagonal: the part's size, the unit of every relative radius."""
    return float(np.linalg.norm(np.ptp(points, axis=0)))
