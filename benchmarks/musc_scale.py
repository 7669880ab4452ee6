"""MuSc's cost against the size of the scored set and the points per scan, and one scan scored against
a stored pool: wall time and peak RSS, each case in a fresh process.

    python benchmarks/musc_scale.py [--sets 8,16,32,64] [--points 12500] [--point-sweep 5000,12500,25000]

Scans are noisy samplings of a shipped CAD part, one with a planted bulge. Time grows with the square
of the set size (each scan's groups against every other scan's), memory with its size (features of
all scans are held; the distance blocks are computed one scan at a time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PART = Path(__file__).resolve().parents[1] / "datasets" / "demo" / "idler_riser.STL"

CASE = """
import json, resource, sys, time
import numpy as np
import ad3d
from ad3d.io import read_scan
from ad3d.synth import plant
from ad3d.synth.acquisition import add_noise
count, points, pool = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
scans = [add_noise(read_scan(sys.argv[4], sample=points, seed=s), 0.001, rng) for s in range(count + pool)]
scans[0] = plant(scans[0], "bulge", seed=1)
det = ad3d.create("musc").fit(scans[count:])
start = time.perf_counter()
results = det.score_many(scans[:count]) if count > 1 else [det.score(scans[0])]
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "top": int(np.argmax([r.object_score for r in results]))}))
"""


def run(count: int, points: int, pool: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CASE, str(count), str(points), str(pool), str(PART)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="8,16,32,64")
    parser.add_argument("--points", type=int, default=12500)
    parser.add_argument("--point-sweep", default="5000,12500,25000")
    parser.add_argument("--pool", type=int, default=64)
    args = parser.parse_args()
    print("| scored together | points per scan | seconds | s per scan | peak RSS MB | bulge scan on top |")
    print("|---|---|---|---|---|---|")
    cases = [(int(n), args.points, 0) for n in args.sets.split(",")]
    cases += [(16, int(p), 0) for p in args.point_sweep.split(",") if int(p) != args.points]
    for count, points, pool in cases + [(1, args.points, args.pool)]:
        row = run(count, points, pool)
        label = f"1 against a pool of {pool}" if pool else str(count)
        print(
            f"| {label} | {points} | {row['seconds']:.1f} | {row['seconds'] / count:.2f} | {row['peak_mb']:.0f} "
            f"| {'yes' if row['top'] == 0 else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
