"""MuSc-V2's 3D branch (zero-shot mutual scoring; Li et al., TPAMI 2026): every scan of a set is scored
by the other, unlabelled scans of the same part. Normal groups of points find close matches in other
scans; a defect finds few.

Per scan: FPS centres; Iterative Point Grouping (IPG: a flat centre takes its k nearest points, a curved
one grows its group from the nearest points out of a larger search space, so groups do not bridge
separate surfaces); group features from the point backbone, one set per "layer" (FPFH at two radii as
the weight-free default, Point-MAE blocks with weights); SNAMD (flat groups take similarity-weighted
means over their 1, 3 and 5 nearest group centres, curved groups keep their own feature); Mutual
Scoring (MSM: a group's nearest distance into each other scan, the mean of the lowest 30 % of those);
scores averaged over layers and degrees, carried to points by inverse-distance weights. Object score =
the max point score, re-scored by RsCon over the scans' anomaly-salient features (k in 1 and 7).

`fit(scans)` keeps an optional reference pool: then one scan can be scored alone against it. Memory and
time grow with the square of the set size (N scans x G groups each: an (G, N G) distance block per scan);
`subset_size` splits large sets.
"""

from __future__ import annotations

import numpy as np
import torch

from ad3d.detectors.base import Detector
from ad3d.detectors.registry import register
from ad3d.errors import ConfigError
from ad3d.types import Scan


def curvature(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(G,) surface variation lambda_min / sum(lambda) of each group of points (G, k) indices."""
    groups = points[neighbours]
    centred = groups - groups.mean(1, keepdims=True)
    eig = np.linalg.eigvalsh(np.einsum("gki,gkj->gij", centred, centred))
    return eig[:, 0] / np.maximum(eig.sum(1), 1e-30)


def iterative_groups(
    points: np.ndarray, centres: np.ndarray, size: int, search: int, step: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """IPG: (G, size) member indices and (G,) curvatures. A centre of curvature below `threshold` takes
    its `size` nearest points; a curved one starts from its `step` nearest and repeatedly adds the `step`
    candidates (of its `search` nearest) closest to the group so far, until it holds `size`."""
    from ad3d import ops

    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    search = min(search, len(points))
    size, step = min(size, search), min(step, size)
    candidates = ops.knn(pts[centres], pts, search)[1].numpy()
    curv = curvature(points, candidates[:, :size])
    groups = candidates[:, :size].copy()
    for g in np.flatnonzero(curv >= threshold):
        member = list(candidates[g, :step])
        rest = candidates[g, step:]
        while len(member) < size and len(rest):
            gap = np.linalg.norm(points[rest][:, None] - points[member][None], axis=2).min(1)
            take = np.argsort(gap, kind="stable")[: min(step, size - len(member))]
            member += list(rest[take])
            rest = np.delete(rest, take)
        groups[g] = member
    return groups, curv


def snamd(features: np.ndarray, centres: np.ndarray, flat: np.ndarray, degrees: tuple[int, ...]) -> list[np.ndarray]:
    """SNAMD on groups: per degree r, each flat group's feature becomes the similarity-weighted mean
    (w = exp(-|f_q - f_p|)) over its r nearest group centres (itself first); curved groups keep theirs."""
    from ad3d import ops

    c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    near = ops.knn(c, c, min(max(degrees), len(centres)))[1].numpy()
    out = []
    for r in degrees:
        idx = near[:, :r]
        weight = np.exp(-np.linalg.norm(features[idx] - features[:, None], axis=2))
        mixed = (weight[..., None] * features[idx]).sum(1) / weight.sum(1, keepdims=True)
        out.append(np.where(flat[:, None], mixed, features).astype(np.float32))
    return out


def mutual_scores(sets: list[np.ndarray], interval: float, pool: list[np.ndarray] = ()) -> list[np.ndarray]:
    """MSM: for each set of (G, D) features, each row's nearest distance into every other set (and every
    pool set); its score is the mean of the lowest `interval` share of those distances (at least one)."""
    out = []
    for i, query in enumerate(sets):
        q = torch.from_numpy(query)
        nearest = [
            torch.cdist(q, torch.from_numpy(other)).min(1).values
            for j, other in enumerate(list(sets) + list(pool))
            if j != i
        ]
        if not nearest:
            raise ConfigError(
                "musc scores a scan against other scans: give it a set of scans, or fit it with "
                "a reference pool of unlabelled scans first"
            )
        d = torch.stack(nearest, 1).sort(1).values
        keep = max(1, int(interval * d.shape[1]))
        out.append(d[:, :keep].mean(1).numpy())
    return out


def rscon(scores: np.ndarray, salient: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """RsCon: min-max-normalised object scores propagated over each scan's k most similar scans (cosine
    of the anomaly-salient features, itself included, rows normalised), averaged over k."""
    if len(scores) < 2:
        return scores
    s = (scores - scores.min()) / max(float(np.ptp(scores)), 1e-12)
    f = salient / np.maximum(np.linalg.norm(salient, axis=1, keepdims=True), 1e-12)
    sim = f @ f.T
    out = []
    for k in ks:
        k = min(k, len(scores))
        keep = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        w = np.zeros_like(sim)
        np.put_along_axis(w, keep, np.take_along_axis(sim, keep, 1).clip(min=0), 1)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
        out.append(w @ s)
    return np.mean(out, 0)


@register
class MuSc(Detector):
    name = "musc"
    learning_type = "zero-shot"
    modalities = ("xyz",)
    _state_arrays = ("pool_",)

    def __init__(
        self,
        num_groups: int = 1024,
        group_size: int = 128,
        ipg: bool = True,
        curvature_threshold: float = 0.01,
        search_size: int = 256,
        grow_step: int = 80,
        radii: tuple[float, ...] = (0.05, 0.1),
        degrees: tuple[int, ...] = (1, 3, 5),
        interval: float = 0.3,
        rscon: bool = True,
        rscon_k: tuple[int, ...] = (1, 7),
        subset_size: int | None = None,
        seed: int = 0,
    ):
        self.num_groups, self.group_size, self.ipg = num_groups, group_size, ipg
        self.curvature_threshold, self.search_size, self.grow_step = curvature_threshold, search_size, grow_step
        self.radii, self.degrees, self.interval = radii, degrees, interval
        self.rscon, self.rscon_k, self.subset_size, self.seed = rscon, rscon_k, subset_size, seed
        self.pool_ = None

    def check_params(self) -> None:
        checks = {
            "num_groups": self.num_groups >= 1,
            "group_size": self.group_size >= 1,
            "radii": len(self.radii) >= 1 and all(r > 0 for r in self.radii),
            "degrees": len(self.degrees) >= 1 and all(d >= 1 for d in self.degrees),
            "interval": 0 < self.interval <= 1,
            "subset_size": self.subset_size is None or self.subset_size >= 2,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"musc {name}={getattr(self, name)!r} is out of range")

    # --- features -----------------------------------------------------------------------------
    def describe(self, scan: Scan) -> dict:
        """Centres (G, 3), and per layer and degree the (G, D) features, L2-normalised."""
        from ad3d import ops
        from ad3d.features import fpfh

        points = np.ascontiguousarray(scan.points, dtype=np.float32)
        centres = ops.even_subset(points, self.num_groups)
        if self.ipg:
            groups, curv = iterative_groups(
                points, centres, self.group_size, self.search_size, self.grow_step, self.curvature_threshold
            )
        else:
            groups = ops.knn(
                torch.from_numpy(points[centres]), torch.from_numpy(points), min(self.group_size, len(points))
            )[1].numpy()
            curv = np.zeros(len(centres))
        diag = float(np.linalg.norm(np.ptp(points, axis=0)))
        views = []
        for radius in self.radii:
            per_point = fpfh(points, radius * diag)
            grouped = per_point[groups].mean(1)
            for feats in snamd(grouped, points[centres], curv < self.curvature_threshold, self.degrees):
                views.append(feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12))
        return {"centres": points[centres], "views": np.stack(views).astype(np.float32)}  # (V, G, D)

    def _fit(self, scans: list[Scan], progress: bool) -> None:
        from tqdm import tqdm

        described = [
            self.describe(s)["views"] for s in tqdm(scans, desc="musc pool", disable=not progress, leave=False)
        ]
        if described and len({d.shape for d in described}) > 1:
            raise ConfigError("musc pool scans must each hold at least num_groups points")
        self.pool_ = np.stack(described) if described else np.zeros((0, 1, 1, 1), np.float32)

    # --- scoring ------------------------------------------------------------------------------
    def _score_batch(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        size = self.subset_size or len(scans)
        results = []
        for start in range(0, len(scans), size):
            results += self._score_set(scans[start : start + size])
        return results

    def _score_set(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        from ad3d import ops

        described = [self.describe(s) for s in scans]
        pool = list(self.pool_) if self.pool_ is not None else []
        views = described[0]["views"].shape[0]
        group_scores = np.mean(
            [
                mutual_scores([d["views"][v] for d in described], self.interval, [p[v] for p in pool])
                for v in range(views)
            ],
            axis=0,
        )
        point_scores = [
            ops.interpolate(torch.from_numpy(s.points), torch.from_numpy(d["centres"]), torch.from_numpy(g))
            .numpy()
            .astype(np.float32)
            for s, d, g in zip(scans, described, group_scores)
        ]
        objects = np.array([float(p.max()) for p in point_scores])
        if self.rscon and len(scans) > 1:
            salient = np.stack([d["views"][:, int(np.argmax(g))].reshape(-1) for d, g in zip(described, group_scores)])
            objects = rscon(objects, salient, tuple(self.rscon_k))
        return [(p, float(o)) for p, o in zip(point_scores, objects)]
