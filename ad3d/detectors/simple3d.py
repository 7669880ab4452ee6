"""Simple3D (Cheng et al., AAAI 2026; hustCYQ/MiniShift-Simple3D): training-free, for dense scans with subtle
defects. Per point, multi-scale neighbourhood descriptors (MSND: FPFH over the k nearest points at several k,
concatenated); per FPS centre, their mean over its `group_size` nearest points (local feature spatial
aggregation, LFSA); a coreset memory bank of the normal scans' centre features, each training scan sampled
`fit_draws` times (FPS from index 0 as released, then from random starts: a bank of four scans also holds the
features a scan gets when its sampling falls differently). Score: distance of each centre's feature to its
nearest bank entry, carried to every point (inverse squared distance of the 3 nearest centres), then averaged
over `smooth_k` points around `smooth_centres` FPS centres and carried back (the release's score smoothing);
object score: mean of the `top_k` highest point scores (640, chosen on the development sets; the release's 80 in the
paper preset).

Descriptors are computed on an evenly thinned copy (as many points as a voxel grid keeps; max_points=0 keeps every
point), and every point of the scan is scored. The voxel size is learned at fit: the median over the training scans
of the size that leaves each at most `max_points` and `thin_share` of its points; every scan of the part is thinned
with it, so k neighbours cover the same area whatever a scan's point count (spacing="scan": each scan thinned to its
own limit; thinning="fps", the default: as many farthest points as the grid keeps, not the grid's). A raw scan's
density follows the scanner's view and its point count varies, so its k-neighbourhoods would cover different areas
at different places and in different scans; the thinned copy's do not (docs/detectors/simple3d.md: development sets
DEV2 and DEV4). Memory grows with max_points x max(scales) (the neighbour graph, 12 bytes an entry: 50 MB at the
defaults) and with the scan's size (its scores); measured in docs/detectors/simple3d.md with the defaults and the
`paper` preset (the release's settings, every point).
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.detectors.base import Detector
from ad3d.detectors.memory_bank import coreset_bank, nearest_distances
from ad3d.detectors.registry import register
from ad3d.detectors.scoring import spread
from ad3d.types import Scan, diagonal

PRESETS = {
    "cpu": {},
    # the release's command line (--num_group 4096 --group_size 128 --max_nn 40 --use_MSND --use_LFSA, num_MSND 2
    # repeats the 80-neighbour scale), Open3D's unoriented normals of 10 neighbours, every point kept
    "paper": {
        "max_points": 0,
        "thin_share": 1.0,
        "scales": (40, 80, 80, 120),
        "normal_k": 10,
        "normals": "open3d",
        "num_groups": 4096,
        "group_size": 128,
        "fit_draws": 1,
        "top_k": 80,
    },
}


FPS_POOL = 4  # candidates per kept point when FPS thins a large scan


def thinning_voxel(points: np.ndarray, max_points: int) -> float:
    """The voxel size whose grid keeps at most `max_points` of the points, at least 90 % of that when the search
    finds such a size (0: keep every point): the voxel resized (as on a surface, count ~ 1 / voxel^2) until the
    count fits, each new size kept strictly between the sizes seen to give too many and too few points (a grid's
    count is not smooth in the size: the plain update can step back and forth)."""
    if max_points <= 0 or len(points) <= max_points:
        return 0.0
    voxel = diagonal(points) / np.sqrt(max_points)
    best, best_count = np.inf, 0
    too_fine, too_coarse = 0.0, np.inf  # voxel sizes seen to keep too many / too few points
    for _ in range(12):
        count = len(thin_at(points, voxel))
        if count <= max_points:
            if count > best_count:
                best, best_count = voxel, count
            if count >= 0.9 * max_points:
                break
            too_coarse = min(too_coarse, voxel)
        else:
            too_fine = max(too_fine, voxel)
        guess = voxel * np.sqrt(count / (0.95 * max_points))
        if not too_fine < guess < too_coarse:  # the update left the bracket: halve it (geometrically)
            guess = np.sqrt(too_fine * too_coarse) if np.isfinite(too_coarse) and too_fine > 0 else guess
        voxel = guess
    return float(best)


def thin_at(points: np.ndarray, voxel: float) -> np.ndarray:
    """Sorted indices of the first point in each occupied cell of a `voxel`-sized grid (0: every point)."""
    if voxel <= 0:
        return np.arange(len(points))
    cells = np.floor((points - points.min(0)) / voxel).astype(np.int64)
    keys = torch.from_numpy((cells[:, 0] * 2_097_152 + cells[:, 1]) * 2_097_152 + cells[:, 2])
    cell, of_point = torch.unique(keys, return_inverse=True)  # torch's: 40 % faster than np.unique on 500k points
    first = torch.full((len(cell),), len(keys), dtype=torch.int64)
    return np.sort(first.scatter_reduce_(0, of_point, torch.arange(len(keys)), "amin").numpy())


@register
class Simple3D(Detector):
    name = "simple3d"
    PRESETS = PRESETS
    modalities = ("xyz",)
    _state_arrays = ("bank_",)
    _state_scalars = ("voxel_",)
    cheap_refit = True

    def __init__(
        self,
        max_points: int = 16384,
        thin_share: float = 0.5,
        spacing: str = "fit",
        thinning: str = "fps",
        scales: tuple[int, ...] = (64, 128, 256),
        normal_k: int = 90,
        normals: str = "adaptive",
        num_groups: int = 4096,
        group_size: int = 64,
        coreset_ratio: float = 0.05,
        fit_draws: int = 4,
        smooth_centres: int = 1024,
        smooth_k: int = 12,
        top_k: int = 640,
        align: bool = False,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._store_params(locals())
        self.bank_ = None
        self.voxel_ = None

    def check_params(self) -> None:
        checks = {
            "max_points": self.max_points >= 0,
            "thin_share": 0 < self.thin_share <= 1,
            "spacing": self.spacing in ("fit", "scan"),
            "thinning": self.thinning in ("fps", "grid"),
            "scales": len(self.scales) >= 1 and all(int(k) >= 1 for k in self.scales),
            "normal_k": self.normal_k >= 3,
            "normals": self.normals in ("outward", "adaptive", "open3d"),
            "num_groups": self.num_groups >= 1,
            "group_size": self.group_size >= 1,
            "coreset_ratio": 0 < self.coreset_ratio <= 1,
            "fit_draws": self.fit_draws >= 1,
            "smooth_centres": self.smooth_centres >= 0,
            "smooth_k": self.smooth_k >= 1,
            "top_k": self.top_k >= 0,
        }
        self._require(checks)

    def point_limit(self, points: np.ndarray) -> int:
        """How many points a scan's descriptors may see: max_points, and thin_share of the scan's (0: all)."""
        return min(self.max_points, max(1, int(self.thin_share * len(points)))) if self.max_points else 0

    def working_copy(self, points: np.ndarray, draw: torch.Generator | None = None) -> np.ndarray:
        """The thinned copy the descriptors see, as many points as a grid at the spacing learned at fit keeps
        (spacing="fit": the same density in every scan of the part, so that k neighbours cover the same area
        whatever the scan's point count) or at the scan's own limit ("scan"); max_points=0 keeps every point. A scan
        that the learned spacing leaves with over twice max_points (a larger part than the training scans) gets
        max_points instead, to bound memory. thinning="fps" (the default) keeps that many farthest points, drawn
        from a grid of half the spacing on a large scan: evenly spread in any pose, where a grid's points follow the
        pose (rows where a face crosses the cells); "grid" keeps the grid's points (docs/detectors/simple3d.md).
        `draw`: FPS starts at a point drawn from it instead of at index 0 (the fit's extra draws)."""
        if not self.max_points:
            return np.ascontiguousarray(points, dtype=np.float32)
        voxel = self.voxel_ if self.spacing == "fit" else thinning_voxel(points, self.point_limit(points))
        keep = thin_at(points, voxel)
        if len(keep) > 2 * self.max_points:
            voxel = thinning_voxel(points, self.max_points)
            keep = thin_at(points, voxel)
        if self.thinning == "fps" and len(keep) < len(points):
            keep = self._farthest(points, len(keep), voxel, draw)
        return np.ascontiguousarray(points[keep], dtype=np.float32)

    def _farthest(self, points: np.ndarray, count: int, voxel: float, draw: torch.Generator | None) -> np.ndarray:
        """Sorted indices of `count` farthest points (from index 0, or a start drawn from `draw`); on a scan of over
        FPS_POOL x count points, drawn from a finer grid (about FPS_POOL x count points on a surface): FPS costs
        points x count."""
        pool = np.arange(len(points))
        if len(points) > FPS_POOL * count:
            pool = thin_at(points, voxel / np.sqrt(FPS_POOL))
        cloud = torch.from_numpy(np.ascontiguousarray(points[pool], dtype=np.float32)).to(self.device)
        return np.sort(pool[_fps(cloud, count, draw).cpu().numpy()])

    def centre_features(self, points: np.ndarray, draw: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(centres (C, 3), LFSA features (C, 33 * len(scales))): MSND on the thinned scan, averaged over
        each FPS centre's group_size nearest points; computed on `device`. With `draw`, every FPS (the thinning's
        and the centres') starts at a random point instead of index 0: another sampling of the same scan."""
        from ad3d import ops
        from ad3d.features.msnd import as_cloud, msnd

        work = self.working_copy(points, draw)
        cloud = as_cloud(work, self.device)
        feats = msnd(cloud, tuple(int(k) for k in self.scales), self.normal_k, self.normals)
        centres = _fps(cloud, min(self.num_groups, len(work)), draw)  # from index 0 unless drawn, as released
        groups = ops.knn(cloud[centres], cloud, min(self.group_size, len(work)))[1]
        return work[centres.cpu().numpy()], feats[groups].mean(1).cpu().numpy()

    def _fit(self, scans: list[Scan], progress: bool) -> None:
        from tqdm import tqdm

        self.voxel_ = float(np.median([thinning_voxel(s.points, self.point_limit(s.points)) for s in scans]))
        draws = [None] + [torch.Generator().manual_seed(self.seed * 1000 + d) for d in range(1, self.fit_draws)]
        feats = [
            self.centre_features(s.points, draw)[1]
            for s in tqdm(scans, desc="simple3d fit", disable=not progress, leave=False)
            for draw in draws
        ]
        self.bank_ = coreset_bank(np.concatenate(feats), self.coreset_ratio, self.seed, self.device)

    def _score(self, scan: Scan) -> tuple[np.ndarray, float]:
        from ad3d import ops

        centres, feats = self.centre_features(scan.points)
        nearest = nearest_distances(feats, self.bank_, self.device).astype(np.float64)
        points = np.ascontiguousarray(scan.points, dtype=np.float32)
        if self.smooth_centres > 0 and len(points) > 1:  # the release's smoothing: group means at FPS anchors
            cloud = torch.from_numpy(points).to(self.device)
            anchors = ops.fps(cloud, min(self.smooth_centres, len(points)))
            groups = ops.knn(cloud[anchors], cloud, min(self.smooth_k, len(points)))[1].cpu().numpy()
            members, slots = np.unique(groups, return_inverse=True)  # only the grouped points' scores are read
            member_scores = spread(points[members], centres, nearest, power=2, device=self.device)
            group_means = member_scores[slots.reshape(groups.shape)].mean(1)
            scores = spread(points, points[anchors.cpu().numpy()], group_means, power=2, device=self.device)
        else:
            scores = spread(points, centres, nearest, power=2, device=self.device)
        scores = scores.astype(np.float32)
        k = len(scores) if self.top_k == 0 else min(self.top_k, len(scores))
        return scores, float(np.mean(np.partition(scores, len(scores) - k)[-k:]))


def _fps(cloud: torch.Tensor, count: int, draw: torch.Generator | None) -> torch.Tensor:
    """FPS from index 0, or from a start drawn from `draw`."""
    from ad3d import ops

    return ops.fps(cloud, count, start="first" if draw is None else "random", generator=draw)
