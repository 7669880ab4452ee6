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


def neighbour_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, k') of each point's k nearest points, itself first (k' = min(k, N), at least 1)."""
    from ad3d import ops

    return ops.knn(points, points, min(max(k, 1), len(points)))[1]


def smooth(scores: torch.Tensor, near: torch.Tensor, k: int) -> torch.Tensor:
    """Mean score over each point's k nearest points (from `neighbours`); k <= 1 returns the scores."""
    return scores[near[:, :k]].mean(1) if k > 1 else scores


def spread(
    points: np.ndarray, anchors: np.ndarray, values: np.ndarray, power: int = 1, device: str = "cpu"
) -> np.ndarray:
    """Values known at `anchors` (scored group centres, a sub-sample) carried to every point: the one way scores
    reach all points. Inverse-distance weights of the 3 nearest anchors: power 1, 1/d (exact at an anchor);
    power 2, 1/d^2 (PointNet++'s, as the releases of M3DM, LSFA, MuSc-V2 and Simple3D weigh them); computed on
    `device`."""
    from ad3d import ops

    if anchors.shape == points.shape and np.array_equal(anchors, points):  # every point scored: nothing to carry
        return values
    points, anchors, values = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (points, anchors, values))
    return ops.interpolate(points, anchors, values, power=power).cpu().numpy()


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


def blur_8bit(image: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """A map blurred as M3DM's, LSFA's and MuSc-V2's releases blur it (`KNNGaussianBlur`): divided by its max,
    cut to 8 bits, PIL's Gaussian blur of `radius`, back to floats times the max."""
    from PIL import Image, ImageFilter

    top = float(image.max())
    if not top > 0:
        return np.zeros_like(image, dtype=np.float32)
    eight = (np.asarray(image, np.float32) / top * 255).astype(np.uint8)
    blurred = Image.fromarray(eight, mode="L").filter(ImageFilter.GaussianBlur(radius=radius))
    return (np.asarray(blurred, np.float32) / 255 * top).astype(np.float32)
