"""Scoring time and peak memory against points per scan: detectors beside patchcore (all at their defaults).

    python benchmarks/scale.py [--points 10000,100000,500000,1000000] [--detectors simple3d,patchcore]
        [--device cpu] [--preset cpu] [--param K=V ...] [--calibrated]

Scans are noisy samplings of a shipped CAD part (datasets/demo/idler_riser.STL); each model is fitted on
three samplings of the same size as the scans it scores ('fit s'; with --calibrated, calibrated on two more, so
the timing includes the defect regions). Every (detector, size) runs in a fresh process: it
loads the saved model, scores the scan once to warm up, then times a second score; peak RSS is the
process's, so it includes the interpreter, torch, the model and the scan (all of which the 'idle' column
shows before the first score); 'GPU MB' is torch's peak allocation on the GPU with --device cuda.
Goals: a 500k-point scan scored by simple3d in under 2 s on the 2-core development machine (issue 25); a
1M-point scan by deviation, registration included, in seconds (issue 26).
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


def sampled(points: int, seed: int):
    from ad3d.io import read_scan
    from ad3d.synth.acquisition import add_noise

    return add_noise(read_scan(PART, sample=points, seed=seed), 0.0005, np.random.default_rng(seed))


def high_water_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it starts afresh at exec, so the parent's
    memory is not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, scan_file: str) -> None:
    """Load, score twice, print {score_s, idle_mb, peak_mb, gpu_mb} as JSON (run in a fresh process); gpu_mb is
    torch's peak allocation on the GPU (0 on the CPU)."""
    import torch

    import ad3d
    from ad3d.types import Scan

    scan = Scan(points=np.load(scan_file))
    det = ad3d.load(model)
    idle = high_water_mb()
    det.score(scan)
    started = time.perf_counter()
    det.score(scan)
    seconds = time.perf_counter() - started
    peak = high_water_mb()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else 0.0
    print(json.dumps({"score_s": seconds, "idle_mb": idle, "peak_mb": peak, "gpu_mb": gpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="10000,100000,500000,1000000")
    ap.add_argument("--detectors", default="simple3d,patchcore")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="cpu", help="the detectors' preset (simple3d paper: every point)")
    ap.add_argument("--param", action="append", metavar="K=V", help="a parameter over the preset (repeatable)")
    ap.add_argument("--calibrated", action="store_true", help="calibrate each model: the timing includes regions")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "SCAN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    with tempfile.TemporaryDirectory(prefix="ad3d-s3d-scale-") as tmp:  # models and scans, gone after the run
        table(Path(tmp), args)


def table(work: Path, args: argparse.Namespace) -> None:
    """Fit each detector on three scans of each size, save it under `work`, time its score in a fresh process."""
    import ad3d
    from ad3d.detectors.registry import detector_class, param_names, parse_params, preset

    print(
        f"{'points':>9} {'detector':<10} {'fit s':>7} {'score s':>8} {'idle MB':>8} {'peak MB':>8} {'GPU MB':>8}",
        flush=True,
    )
    for points in (int(p) for p in args.points.split(",")):
        train = [sampled(points, s) for s in range(3)]
        scan_file = work / f"scan-{points}.npy"
        np.save(scan_file, sampled(points, 99).points)
        timing = {}
        for name in args.detectors.split(","):
            params = {"device": args.device} if "device" in param_names(detector_class(name)) else {}
            if args.preset in getattr(detector_class(name), "PRESETS", {}):
                params.update(preset(name, args.preset))
            params.update(parse_params(args.param))
            model = work / f"{name}-{points}.ad3d"
            started = time.perf_counter()
            det = ad3d.create(name, **params).fit(train)
            fit_s = time.perf_counter() - started
            (det.calibrate([sampled(points, s) for s in (3, 4)]) if args.calibrated else det).save(model)
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(model), str(scan_file)], capture_output=True, text=True
            )
            if run.returncode:
                sys.exit(run.stderr)
            row = json.loads(run.stdout.strip().splitlines()[-1])
            timing[name] = row["score_s"]
            print(
                f"{points:>9,} {name:<10} {fit_s:>7.1f} {row['score_s']:>8.2f} {row['idle_mb']:>8.0f} "
                f"{row['peak_mb']:>8.0f} {row['gpu_mb']:>8.0f}",
                flush=True,
            )
        for name in set(timing) - {"patchcore"} if "patchcore" in timing else ():
            print(f"{'':>9} {name} / patchcore time: {timing[name] / timing['patchcore']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
