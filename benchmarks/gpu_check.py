"""The GPU checks that CI cannot run (it has no GPU): every CUDA op path once, and the learned detectors
trained, scored, saved and loaded on the GPU beside the same on the CPU.

    python benchmarks/gpu_check.py ops                  # small calls on every CUDA path; run it under
    compute-sanitizer --tool memcheck python benchmarks/gpu_check.py ops
    python benchmarks/gpu_check.py detectors [--iterations 60]

With the ops tests and the detector contract on the GPU (`pytest tests/test_ops.py tests/test_contract.py -k "cuda or
ops"`, whose CUDA cases run where torch sees a GPU) and
`python benchmarks/ops.py --device cuda`, this is what was run on an H200 (docs/ops.md). What the open issues ask
of a GPU besides: `python benchmarks/scale.py --device cuda --detectors simple3d` (simple3d's dense scans, issue
25; run on an H200 on 2026-12-04, docs/detectors/simple3d.md) and `ad3d bench run --spec
benchmarks/sweeps/paper_gpu.toml` (the paper presets of r3dad and mc4ad at their released training length, issue
23; not run yet: mc4ad's 150,000 steps alone would have to run at 6 ms a step to fit in the 15 minutes of GPU
time a session is lent, start and build included).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def check_ops() -> None:
    """fps (one-block and split paths, float and double, ragged) and knn (brute-force and grid paths)."""
    from ad3d import ops

    gen = torch.Generator().manual_seed(0)
    small = torch.rand(3, 5000, 3, generator=gen).cuda()
    big = torch.rand(2, 40_000, 3, generator=gen).cuda()
    calls = [
        lambda: ops.fps(small, 17, lengths=[5000, 17, 4000]),
        lambda: ops.fps(small.double(), 17, lengths=[5000, 17, 4000]),
        lambda: ops.fps(big, 100, lengths=[40_000, 33_000]),
        lambda: ops.fps(big.double(), 2000, lengths=[40_000, 33_000]),
        *[
            lambda k=k: ops.knn(small[:, :700], small, k, q_lengths=[700, 5, 300], r_lengths=[5000, 64, 4000])
            for k in (1, 9, 33, 64)
        ],
        *[
            lambda k=k: ops.knn(big[:, :500], big, k, q_lengths=[500, 77], r_lengths=[40_000, 33_000])
            for k in (1, 16, 64)
        ],
    ]
    for call in calls:
        out = call()
        torch.cuda.synchronize()
        print(tuple(out.shape) if torch.is_tensor(out) else tuple(out[0].shape), flush=True)
    print("every CUDA op path ran")


def box_scan(n: int, seed: int, bulge: bool = False):
    """Points on a 0.8 x 0.6 x 0.4 box with face normals; with bulge, the 5 % nearest one point pushed out."""
    from ad3d.types import Scan

    rng = np.random.default_rng(seed)
    size = np.array([0.8, 0.6, 0.4])
    face = rng.integers(0, 6, n)
    axis, sign = face // 2, np.where(face % 2, 1.0, -1.0)
    points = (rng.random((n, 3)) - 0.5) * size
    points[np.arange(n), axis] = sign * size[axis] / 2
    normals = np.zeros((n, 3))
    normals[np.arange(n), axis] = sign
    labels = np.zeros(n, np.uint8)
    if bulge:
        labels = (np.linalg.norm(points - points[0], axis=1) < 0.1).astype(np.uint8)
        points[labels == 1] += 0.05 * normals[labels == 1]
    return Scan(points=points.astype(np.float32), normals=normals.astype(np.float32), category="box", labels=labels)


def check_detectors(iterations: int) -> None:
    """r3dad and mc4ad on the GPU and on the CPU: fit time, finite scores, P-AUROC; GPU save/load."""
    import ad3d
    from ad3d.metrics import auroc

    train, test = [box_scan(2048, s) for s in range(8)], box_scan(2048, 99, bulge=True)
    common = {"rotation": "none", "noise_aug": 0.0, "align": False, "iterations": iterations, "eval_every": 20}
    settings = {"r3dad": {"num_points": 1024, "batch_size": 8}, "mc4ad": {"num_points": 1024, "batch_size": 4}}
    for name, own in settings.items():
        for device in ("cuda", "cpu"):
            start = time.perf_counter()
            det = ad3d.create(name, **own, **common, device=device).fit(train)
            fit_s = time.perf_counter() - start
            scores = det.score(test).point_scores
            print(
                f"{name} {device}: fit {fit_s:.1f} s, finite {bool(np.isfinite(scores).all())}, "
                f"P-AUROC {auroc(test.labels, scores):.3f}",
                flush=True,
            )
            if device == "cuda":
                with tempfile.TemporaryDirectory() as folder:
                    det.save(f"{folder}/m.ad3d")
                    back = ad3d.load(f"{folder}/m.ad3d")
                    same = np.allclose(back.score(test).point_scores, scores, rtol=1e-4, atol=1e-5)
                print(f"{name}: saved and loaded, same scores {same}, on {back.device_}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ops", "detectors"])
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU")
    if args.what == "ops":
        check_ops()
    else:
        check_detectors(args.iterations)


if __name__ == "__main__":
    main()
