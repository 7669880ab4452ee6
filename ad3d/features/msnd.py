"""Multi-scale neighbourhood descriptors (MSND, Simple3D): FPFH over the k nearest points at several k,
concatenated. FPFH here is Open3D's definition (Rusu et al. with Open3D's 1/d^2 weights and its SPFH
self term) computed from one shared kNN graph in vectorised float32 torch, so the scales cost one search and
a dense scan does not pay Open3D's per-scale KD-tree passes.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

BINS = 11  # per angle; 3 angles -> 33-dimensional FPFH
EIGH_BATCH = 16384
PAIR_CHUNK_CPU = 65536  # point pairs a pass of pair_bins works on
PAIR_CHUNK_GPU = 1 << 22  # about the former 16,384-row chunk at 255 neighbours (the H200 figures were measured with it)
ADAPTIVE_NORMAL_KS = (30,)  # the smaller neighbourhoods that normals="adaptive" weighs against normal_k


def as_cloud(points: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """(N, 3) contiguous float32 tensor of numpy or torch points, on `device` (None: where they are)."""
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    return points.to(device=device, dtype=torch.float32).contiguous()


def neighbour_graph(points: np.ndarray | torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dist2, idx), each (N, k + 1): every point's k nearest points, itself first (ad3d's exact kNN), on the
    points' device."""
    from ad3d import ops

    pts = as_cloud(points)
    dist2, idx = ops.knn(pts, pts, min(k + 1, len(pts)))
    first = torch.arange(len(pts), device=pts.device)
    self_pos = (idx == first[:, None]).float().argmax(1)  # duplicates may put another point first
    swap = self_pos > 0
    if bool(swap.any()):
        rows = torch.flatnonzero(swap)
        idx[rows, self_pos[rows]] = idx[rows, 0]
        idx[rows, 0] = rows
        dist2[rows, self_pos[rows]] = dist2[rows, 0]
        dist2[rows, 0] = 0.0
    return dist2, idx


def pca_normals(points: np.ndarray | torch.Tensor, idx: torch.Tensor, k: int | tuple[int, ...]) -> torch.Tensor:
    """(N, 3) float64 unit normals on idx's device: the least-variance direction of each point's k nearest points
    (itself included, as Open3D counts them), turned away from the centroid so that a surface gets one sign in
    every scan. With several k, each point takes the k whose fit is flattest (least surface variation, the
    smallest eigenvalue over their sum): the largest on a smooth face, where it averages the noise out, a smaller
    one where the largest would straddle an edge or a small bore and tilt the normal."""
    pts = torch.as_tensor(points).to(device=idx.device, dtype=torch.float64)
    normals = variation = None
    for size in sorted({min(int(size), idx.shape[1]) for size in np.atleast_1d(k)}):
        normal, flatness = _plane_fit(pts, idx[:, :size])
        if normals is None:
            normals, variation = normal, flatness
        else:
            normals = torch.where((flatness < variation)[:, None], normal, normals)
            variation = torch.minimum(flatness, variation)
    flip = ((pts - pts.mean(0)) * normals).sum(1) < 0
    normals[flip] *= -1
    return normals


def _plane_fit(pts: torch.Tensor, near_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unsigned normals (N, 3), surface variation (N,)) of each point's neighbours `near_idx` (N, k)."""
    near = pts[near_idx]
    centred = near - near.mean(1, keepdim=True)
    scatter = centred.transpose(1, 2) @ centred
    # batches of EIGH_BATCH: cuSOLVER's batched solver failed (internal error) on 100k matrices on an H200
    values, vectors = zip(*(torch.linalg.eigh(part) for part in scatter.split(EIGH_BATCH)))
    values = torch.cat(values)
    return torch.cat(vectors)[:, :, 0], values[:, 0] / values.sum(1).clamp_min(torch.finfo(values.dtype).tiny)


def open3d_normals(points: np.ndarray, k: int) -> np.ndarray:
    """(N, 3) normals as the Simple3D release estimates them: Open3D's, from k neighbours, left unoriented."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    return np.asarray(cloud.normals)


def _pair_features(p1, n1, p2, n2):
    """Open3D's ComputePairFeatures, batched: (alpha-like atan2 angle, phi, theta) per pair of a point (p1, n1:
    (R, 1, 3)) and its neighbours (p2, n2: (R, K, 3)); zeros where the points coincide or the pair is degenerate.
    Open3D swaps the pair (m1 = n2, m2 = n1, d = p1 - p2) when acos|n1.d| > acos|n2.d|, i.e. when |n1.d| < |n2.d|,
    then takes v = d x m1 / |d x m1| and w = m1 x v. Its three angles need only dot products: w.m2 =
    (d.m2 - (m1.d)(m1.m2)) / |d x m1| (m1 a unit vector), |d x m1|^2 = |d|^2 - (m1.d)^2, and (d x m1).m2 is the same
    with or without the swap, so no vector is swapped or crossed twice (a third fewer passes over the pairs)."""
    d = p2 - p1
    length = d.norm(dim=-1)
    safe = length.clamp_min(1e-30)
    a1 = (d * n1).sum(-1) / safe
    a2 = (d * n2).sum(-1) / safe
    cosine = (n2 * n1).sum(-1)
    triple = (torch.linalg.cross(d, n1.expand_as(d), dim=-1) * n2).sum(-1)
    swap = a1.abs().clamp(max=1) < a2.abs().clamp(max=1)
    third = torch.where(swap, -a2, a1)  # m1.d / |d| after the swap
    along = third * length
    other = torch.where(swap, -a1, a2) * length  # m2.d after the swap
    v_norm = (length * length - along * along).clamp_min(0).sqrt()
    inverse = 1.0 / v_norm.clamp_min(1e-30)
    first = torch.atan2((other - along * cosine) * inverse, cosine)
    valid = (length > 0) & (v_norm > 0)
    zero = torch.zeros_like(first)
    return torch.where(valid, first, zero), torch.where(valid, triple * inverse, zero), torch.where(valid, third, zero)


def _bin(values: torch.Tensor, low: float, high: float, offset: int) -> torch.Tensor:
    """Histogram slot offset + (0..BINS-1) of each value in [low, high], as uint8."""
    return (values - low).mul_(BINS).div_(high - low).floor_().clamp_(0, BINS - 1).add_(offset).to(torch.uint8)


def pair_bins(points: torch.Tensor, normals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, K, 3) histogram slots (0-10, 11-21, 22-32) of the pair features of each point with its neighbours
    idx[:, 1:] (idx[:, 0] is the point itself). Nested scales share them: a k-neighbour SPFH counts the first k.
    Computed in row chunks of PAIR_CHUNK_CPU pairs on the CPU (each pass stays in cache: half the time of 4M-pair
    chunks at 16k points x 255 neighbours), PAIR_CHUNK_GPU on the GPU."""
    n, k = idx.shape[0], idx.shape[1] - 1
    out = torch.empty(n, k, 3, dtype=torch.uint8, device=points.device)
    chunk = max(1, (PAIR_CHUNK_GPU if points.is_cuda else PAIR_CHUNK_CPU) // max(k, 1))
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        nb = idx[rows, 1:]
        f0, f1, f2 = _pair_features(points[rows, None, :], normals[rows, None, :], points[nb], normals[nb])
        out[rows, :, 0] = _bin(f0, -math.pi, math.pi, 0)
        out[rows, :, 1] = _bin(f1, -1, 1, BINS)
        out[rows, :, 2] = _bin(f2, -1, 1, 2 * BINS)
    return out


def spfh(bins: torch.Tensor, k: int) -> torch.Tensor:
    """(N, 33) simplified point feature histograms over each point's first k neighbours (from pair_bins):
    each of the three 11-bin histograms sums to 100."""
    flat = bins[:, :k].reshape(len(bins), -1).long()
    hist = torch.zeros(len(bins), 3 * BINS, dtype=torch.float32, device=bins.device)
    if not k:
        return hist
    return hist.scatter_add_(1, flat, torch.full(flat.shape, 100.0 / k, dtype=torch.float32, device=bins.device))


def fpfh_from_spfh(own: torch.Tensor, dist2: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, 33) FPFH: SPFH(p) + per-angle renormalised sum over the neighbours q of SPFH(q) / |p - q|^2. On the CPU
    one sparse N x N product (no N x k x 33 gather); on the GPU a gather in row chunks, since cuSPARSE's product
    does not give the same bits twice (measured on an H200) and a model must score the same every time."""
    n, k = idx.shape[0], idx.shape[1] - 1
    d2 = dist2[:, 1:]
    weight = torch.where(d2 > 0, 1.0 / d2.clamp_min(1e-30), torch.zeros_like(d2))
    if own.is_cuda:
        rows = max(1, 2**26 // max(1, k * 3 * BINS))  # 256 MB of gathered histograms a chunk
        summed = torch.cat(
            [(own[nb] * w[..., None]).sum(1) for nb, w in zip(idx[:, 1:].split(rows), weight.split(rows))]
        ).view(n, 3, BINS)
    else:
        crow = torch.arange(0, n * k + 1, k, dtype=torch.int64)
        with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            neighbours = torch.sparse_csr_tensor(crow, idx[:, 1:].reshape(-1), weight.reshape(-1), (n, n))
        summed = (neighbours @ own).view(n, 3, BINS)
    per_angle = summed.sum(2, keepdim=True)
    scale = torch.where(per_angle != 0, 100.0 / per_angle.clamp_min(1e-30), torch.zeros_like(per_angle))
    return (summed * scale).view(n, 3 * BINS) + own


def fpfh_knn(points: np.ndarray, normals: np.ndarray, dist2: torch.Tensor, idx: torch.Tensor) -> np.ndarray:
    """(N, 33) FPFH over the neighbourhoods (dist2, idx) (self first), as Open3D computes it with a kNN
    search of idx.shape[1] points."""
    pts = torch.from_numpy(np.asarray(points, dtype=np.float32))
    bins = pair_bins(pts, torch.from_numpy(np.asarray(normals, dtype=np.float32)), idx)
    return fpfh_from_spfh(spfh(bins, idx.shape[1] - 1), dist2, idx).numpy()


def msnd(
    points: np.ndarray | torch.Tensor,
    scales: tuple[int, ...] = (40, 80, 120),
    normal_k: int = 10,
    normals: str = "outward",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(N, 33 * len(scales)) float32 multi-scale neighbourhood descriptors, computed and returned on `device`
    (None: the points' own; numpy points: the CPU): for each k in `scales`, FPFH over the k nearest points, the
    point itself included (Open3D's max_nn; a k may repeat, as the release's three-scale setting does); normals
    from `normal_k` points: "outward" (pca_normals), "adaptive" (pca_normals over ADAPTIVE_NORMAL_KS or
    normal_k points, whichever fit is flattest) or "open3d" (open3d_normals, on the CPU)."""
    pts = as_cloud(points, device)
    dist2, idx = neighbour_graph(pts, max(max(scales), normal_k) - 1)
    if normals == "outward":
        normal = pca_normals(pts, idx, normal_k)
    elif normals == "adaptive":
        normal = pca_normals(pts, idx, (*ADAPTIVE_NORMAL_KS, normal_k))
    else:
        normal = torch.from_numpy(open3d_normals(pts.cpu().numpy(), normal_k))
    bins = pair_bins(pts, normal.to(device=pts.device, dtype=torch.float32), idx[:, : max(scales)])
    per_scale = {k: fpfh_from_spfh(spfh(bins, k - 1), dist2[:, :k], idx[:, :k]) for k in sorted(set(scales))}
    return torch.cat([per_scale[k] for k in scales], 1)
