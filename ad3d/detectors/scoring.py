"""Scoring pieces shared by the detectors: robust object scores, neighbourhood smoothing, carrying
sub-sample scores to every point, a part's normal-score baseline, and blurring image maps."""

from __future__ import annotations

import numpy as np
import torch


def top_mean(scores: np.ndarray, fraction: float) -> float:
    """Mean of the highest `fraction` of the scores (at least one): a robust object score; 0 -> max."""
    if fraction <= 0:
        return float(np.max(scores))
    k = max(1, int(round(fraction * len(scores))))
    return float(np.mean(np.partition(scores, len(scores) - k)[-k:]))


def reweighted_max(query: np.ndarray, bank: np.ndarray, k: int = 3) -> float:
    """PatchCore's object score, as the R3D-AD, M3DM and LSFA releases compute it: the largest distance s*
    from a query row to its nearest bank row, times 1 - softmax weight of s* against the query row's
    distances to the k - 1 next bank neighbours of that bank row (all divided by sqrt(dim))."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    dist, idx = nearest_rows(q, b, 1)
    worst = int(torch.argmax(dist[:, 0]))
    s_star = dist[worst, 0]
    around = nearest_rows(b[idx[worst]], b, min(k, len(b)))[1][0, 1:]
    others = torch.linalg.norm(q[worst] - b[around], dim=1)
    scale = float(np.sqrt(q.shape[1]))
    weight = 1 - torch.exp(s_star / scale) / torch.exp(others / scale).sum()
    return float(weight * s_star)


def nearest_rows(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), (M, k) each: the k nearest bank rows of each query row, nearest first. 3-D rows
    go through ad3d's kNN op, others through cdist in blocks of query rows."""
    from ad3d import ops

    if query.shape[1] == 3:
        dist2, idx = ops.knn(query, bank, k)
        return dist2.clamp_min(0).sqrt(), idx
    parts = [torch.cdist(block, bank).topk(k, dim=1, largest=False) for block in query.split(4096)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def neighbour_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, k') of each point's k nearest points, itself first (k' = min(k, N), at least 1)."""
    from ad3d import ops

    return ops.knn(points, points, min(max(k, 1), len(points)))[1]


def smooth(scores: torch.Tensor, near: torch.Tensor, k: int) -> torch.Tensor:
    """Mean score over each point's k nearest points (from `neighbours`); k <= 1 returns the scores."""
    return scores[near[:, :k]].mean(1) if k > 1 else scores


def spread(points: np.ndarray, subset: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores of the `subset` points carried to every point (inverse-distance weights of the 3 nearest)."""
    from ad3d import ops

    if len(subset) == len(points):  # ops.even_subset kept every point, in order
        return scores
    return ops.interpolate(torch.from_numpy(points), torch.from_numpy(points[subset]), torch.from_numpy(scores)).numpy()


def location_baseline(reference: np.ndarray, clouds: list[tuple[np.ndarray, np.ndarray]], k: int = 8) -> np.ndarray:
    """The normal score around each point of the part's reference: per normal cloud (points and their
    raw scores, in the reference's frame), the mean score of the k cloud points nearest each reference
    point, averaged over the clouds. Where a part always scores high (a sharp edge a network never quite
    fits), the baseline is high too; only possible on aligned scans."""
    from ad3d import ops

    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    maps = [
        scores[
            ops.knn(ref, torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)), min(k, len(pts)))[1].numpy()
        ].mean(1)
        for pts, scores in clouds
    ]
    return np.mean(maps, 0).astype(np.float32)


def baseline_at(reference: np.ndarray, baseline: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The baseline of the reference point nearest each of `points`."""
    from ad3d import ops

    near = ops.knn(
        torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)),
        1,
    )[1][:, 0]
    return baseline[near.numpy()]


def blur_map(image: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """A 2D anomaly map smoothed by a Gaussian of `sigma` pixels (M3DM, LSFA and MuSc-V2 blur with 4)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(image, dtype=np.float32), sigma=sigma, mode="nearest")
