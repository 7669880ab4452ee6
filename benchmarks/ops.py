"""Time ad3d's fps and knn against every peer importable here; print medians and ratios.

    python benchmarks/ops.py            # 10k / 100k / 1M points
    python benchmarks/ops.py --quick    # 10k / 100k only
    python benchmarks/ops.py --device cuda

Peers (each only if importable): fpsample (vanilla and bucket-KD FPS), open3d FPS, torch-cluster,
pytorch3d, scipy cKDTree (workers=-1), torch.cdist + topk (small sizes), all on the CPU; with --device cuda
also the vectorised torch ops (ad3d.ops.fallback) on the GPU. "ours/best" < 1 means faster.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import statistics
import time

import numpy as np
import torch


def median_ms(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: first-use builds, caches, thread pools
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def optional(name):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def fps_peers(points: np.ndarray, k: int, big: bool) -> dict:
    peers = {}
    fpsample, o3d = optional("fpsample"), optional("open3d")
    tc, p3d = optional("torch_cluster"), optional("pytorch3d.ops")
    if fpsample is not None:
        peers["fpsample bucket"] = lambda: fpsample.bucket_fps_kdline_sampling(points, k, 7)
        if not big:  # O(N k): minutes at 1M -> 8192
            peers["fpsample vanilla"] = lambda: fpsample.fps_sampling(points, k)
    if o3d is not None:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
        peers["open3d"] = lambda: cloud.farthest_point_down_sample(k)
    t = torch.from_numpy(points)
    if tc is not None and not big:
        peers["torch-cluster"] = lambda: tc.fps(t, ratio=k / len(points), random_start=False)
    if p3d is not None:
        peers["pytorch3d"] = lambda: p3d.sample_farthest_points(t[None], K=k)
    return peers


def knn_peers(query: np.ndarray, ref: np.ndarray, k: int, big: bool) -> dict:
    peers = {}
    spatial = optional("scipy.spatial")
    tc, p3d = optional("torch_cluster"), optional("pytorch3d.ops")
    if spatial is not None:
        peers["cKDTree"] = lambda: spatial.cKDTree(ref).query(query, k, workers=-1)
    q, r = torch.from_numpy(query), torch.from_numpy(ref)
    if tc is not None and not big:
        peers["torch-cluster"] = lambda: tc.knn(r, q, k)
    if p3d is not None:
        peers["pytorch3d"] = lambda: p3d.knn_points(q[None], r[None], K=k)
    if len(query) * len(ref) <= 2e8:
        peers["cdist+topk"] = lambda: torch.cdist(q, r).topk(k, largest=False)
    return peers


def gpu_peers(op: str, tensors: tuple, k: int, dev: torch.device) -> dict:
    """The vectorised torch versions on the same GPU: what a GPU user has without our kernels."""
    from ad3d.ops import fallback

    if dev.type != "cuda":
        return {}
    lengths = [torch.tensor([len(t)]) for t in tensors]
    batched = [t[None] for t in tensors]
    if op == "fps":
        return {"torch (gpu)": lambda: fallback.fps(batched[0], lengths[0], torch.zeros(1, dtype=torch.int64), k)}
    return {"torch (gpu)": lambda: fallback.knn(*batched, *lengths, k, chunk_elems=1 << 27)}


def main() -> None:
    from tqdm import tqdm

    from ad3d import ops

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-point cases")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours only; peers run where they run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ops.load_extension()
    rng = np.random.default_rng(0)
    cases = [
        ("fps", 10_000, 1024, None),
        ("fps", 100_000, 2048, None),
        ("knn", 10_000, 10_000, 16),
        ("knn", 20_000, 100_000, 16),
    ]
    if not args.quick:
        cases += [("fps", 1_000_000, 8192, None), ("knn", 1_000_000, 1_000_000, 16)]
    rows = []
    for op, a, b, k in tqdm(cases, desc="benchmark", unit="case"):
        big = max(a, b) >= 1_000_000
        repeats = 1 if big else args.repeats
        if op == "fps":
            pts = rng.random((a, 3), dtype=np.float32)
            t = torch.from_numpy(pts).to(dev)
            size = f"{a // 1000}k -> {b}" if a < 1e6 else f"1M -> {b}"
            ours = median_ms(lambda: ops.fps(t, b), repeats, sync)
            peers = {name: median_ms(fn, repeats) for name, fn in fps_peers(pts, b, big).items()}
            peers |= {name: median_ms(fn, repeats, sync) for name, fn in gpu_peers(op, (t,), b, dev).items()}
        else:
            q, r = rng.random((a, 3), dtype=np.float32), rng.random((b, 3), dtype=np.float32)
            tq, tr = torch.from_numpy(q).to(dev), torch.from_numpy(r).to(dev)
            size = f"{a // 1000}k x {b // 1000}k, k{k}".replace("1000k", "1M")
            ours = median_ms(lambda: ops.knn(tq, tr, k), repeats, sync)
            peers = {name: median_ms(fn, repeats) for name, fn in knn_peers(q, r, k, big).items()}
            peers |= {name: median_ms(fn, repeats, sync) for name, fn in gpu_peers(op, (tq, tr), k, dev).items()}
        rows.append((op, size, ours, peers))
    names = sorted({n for *_, peers in rows for n in peers})
    header = f"{'op':<4} {'size':<20} {'ours ms':>9} " + " ".join(f"{n + ' ms':>18}" for n in names) + "  ours/best"
    print(f"\nad3d ops on {args.device} ({torch.get_num_threads()} threads), median of {args.repeats} (1 at 1M points)")
    print(header)
    for op, size, ours, peers in rows:
        cells = " ".join(f"{peers[n]:>18.1f}" if n in peers else f"{'-':>18}" for n in names)
        ratio = f"{ours / min(peers.values()):.2f}" if peers else "-"
        print(f"{op:<4} {size:<20} {ours:>9.1f} {cells}  {ratio:>9}")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
