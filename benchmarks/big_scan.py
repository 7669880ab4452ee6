"""A 5,000,000-point scan end to end through `ad3d score` (patchcore model): time and peak memory of
each step (read, score, regions, write), from the JSON report of one fresh process.

    python benchmarks/big_scan.py [--points 5000000] [--work DIR]

The scan is a dense sampling of a shipped CAD part (with sensor noise) written as a binary PCD; the
model is fitted on four 20k-point samplings of the same part. Goal (issue 12): the whole run under
10 s and under 1.5 GB peak RSS on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PART = Path(__file__).resolve().parents[1] / "datasets" / "demo" / "idler_riser.STL"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=5_000_000)
    ap.add_argument(
        "--work",
        help="folder for the scan, model and results, kept for the next run (default: a temporary one, removed after)",
    )
    args = ap.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        return run(Path(args.work), args.points)
    with tempfile.TemporaryDirectory(prefix="ad3d-big-") as tmp:
        run(Path(tmp), args.points)


def run(work: Path, points: int) -> None:
    """Make the scan and the model in `work` unless there already, then time `ad3d score` on the scan."""
    import ad3d
    from ad3d.io import read_scan, write_pcd
    from ad3d.synth.acquisition import add_noise

    scan_path, model = work / "big.pcd", work / "m.ad3d"
    if not scan_path.exists():
        big = add_noise(read_scan(PART, sample=points, seed=1), 0.0005, np.random.default_rng(0))
        write_pcd(scan_path, big.replace(normals=None))
    if not model.exists():
        train = [read_scan(PART, sample=20000, seed=s) for s in range(4)]
        ad3d.create("patchcore").fit(train[:3]).calibrate(train[3:]).save(model)
    out = work / "out"
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "ad3d.cli", "score", str(model), str(scan_path), "--out", str(out), "--timings"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if run.returncode not in (0, 1):
        sys.exit(run.stderr)
    t = json.loads((out / "big.json").read_text())["timings"]
    rows = [
        ("read", t["read_s"], t["read_peak_mb"]),
        ("align + score", t["score_s"], t["score_peak_mb"]),
        ("regions", t.get("regions_s", 0.0), t["score_peak_mb"]),
        ("write PLY + JSON", t["write_ply_s"], t["write_peak_mb"]),
    ]
    print(f"{'step':<18} {'s':>7} {'peak RSS MB':>12}")
    for name, seconds, mb in rows:
        print(f"{name:<18} {seconds:>7.2f} {mb:>12.0f}")
    print(
        f"{'process, end to end':<18} {wall:>7.2f} {max(r[2] for r in rows):>12.0f}   "
        f"({points:,} points; imports and model load included in the wall time)"
    )


if __name__ == "__main__":
    main()
