"""FPFH PatchCore memory bank: the standard 3D baseline (Real3D-AD, 3D-ADS); with point_features="point-mae",
M3DM's point-only PatchCore on a frozen Point-MAE encoder (weights: a local file, never stored in the model).

Point score = distance from the FPFH descriptor at an FPS centre to its nearest neighbour in a
coreset of descriptors from the normal training scans, interpolated to every input point by 3-NN.
xyz_weight > 0 appends the centre's coordinates (in FPFH-radius units) as in Real3D-AD's
"PatchCore (FPFH + Raw)", for aligned scans only. Object score = mean of the top `top_fraction`
of point scores (top_fraction=0: the max). Defaults measured by benchmarks/baseline_sweep.py.
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.detectors.base import Detector
from ad3d.detectors.memory_bank import coreset_bank, nearest_distances
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import spread, top_mean
from ad3d.types import Scan, diagonal


@register
class PatchCore(Detector):
    name = "patchcore"
    PRESETS = {"cpu": {}}  # no paper preset: PatchCore was published for images; its point-cloud use varies
    modalities = ("xyz",)
    _state_arrays = ("bank_",)
    _state_scalars = ("radius_",)
    cheap_refit = True

    def __init__(
        self,
        num_points: int = 8192,
        num_groups: int = 2048,
        radius_fraction: float = 0.1,
        coreset_ratio: float = 0.25,
        xyz_weight: float = 0.0,
        top_fraction: float = 0.05,
        align: bool = False,
        point_features: str = "fpfh",
        point_weights: str | None = None,
        group_size: int = 32,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._store_params(locals())
        self.bank_ = None
        self.radius_ = None

    def check_params(self) -> None:
        checks = {
            "num_points": self.num_points >= 1,
            "num_groups": self.num_groups >= 1,
            "radius_fraction": 0 < self.radius_fraction,
            "coreset_ratio": 0 < self.coreset_ratio <= 1,
            "xyz_weight": self.xyz_weight >= 0,
            "top_fraction": 0 <= self.top_fraction < 1,
            "point_features": self.point_features in ("fpfh", "point-mae"),
            "group_size": self.group_size >= 1,
        }
        self._require(checks)

    def _sample(self, scan: Scan) -> tuple[np.ndarray, np.ndarray]:
        """FPS sub-cloud (at most num_points) and its first num_groups indices (an FPS prefix)."""
        from ad3d import ops

        pts = torch.from_numpy(scan.points)
        order = ops.fps(pts, min(self.num_points, len(scan))).numpy()
        return scan.points[order], np.arange(min(self.num_groups, len(order)))

    def _descriptors(self, scan: Scan) -> tuple[np.ndarray, np.ndarray]:
        """Group centres and their features: FPFH at an FPS prefix, or a Point-MAE encoder's groups."""
        from ad3d.features import fpfh

        sub, centres = self._sample(scan)
        if self.point_features == "point-mae":
            groups = self.backbone()(sub)
            return groups.centres.astype(np.float32), groups.features
        feats = fpfh(sub, self.radius_)[centres]
        if self.xyz_weight > 0:  # "FPFH + raw": position in radius units, for aligned scans
            feats = np.concatenate([feats, (sub[centres] / self.radius_ * self.xyz_weight).astype(np.float32)], 1)
        return sub[centres], feats

    def backbone(self):
        """The frozen Point-MAE encoder (point_features="point-mae"), built once from the local weights."""
        if getattr(self, "_backbone", None) is None:
            from ad3d.features import point_backbone

            self._backbone = point_backbone(
                "point-mae",
                weights=self.point_weights,
                num_group=self.num_groups,
                group_size=self.group_size,
                device=self.device,
            )
        return self._backbone

    def fingerprints(self) -> list[dict]:
        return [self.backbone().fingerprint()] if self.point_features == "point-mae" else []

    def _fit(self, scans: list[Scan], progress: bool) -> None:
        from tqdm import tqdm

        diag = np.median([diagonal(s.points) for s in scans])
        self.radius_ = float(self.radius_fraction * diag)
        feats = np.concatenate(
            [self._descriptors(s)[1] for s in tqdm(scans, desc="patchcore fit", disable=not progress, leave=False)]
        )
        self.bank_ = coreset_bank(feats, self.coreset_ratio, self.seed, self.device)

    def _score(self, scan: Scan) -> tuple[np.ndarray, float]:

        centres, feats = self._descriptors(scan)
        nearest = nearest_distances(feats, self.bank_, self.device)
        point_scores = spread(scan.points, centres, nearest).astype(np.float32)
        return point_scores, top_mean(point_scores, self.top_fraction)
