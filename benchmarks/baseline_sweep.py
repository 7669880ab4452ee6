"""The measurements behind the patchcore defaults: radius, raw coordinates and object score.

    python benchmarks/baseline_sweep.py [MESH_DIR]     # default: six YCB + CAD parts from shared/data

Synthesises an Anomaly-ShapeNet-layout set (4 train, 4 good, 2 of each defect per part), fits each
configuration per part and prints mean O-AUROC for several object scores and the mean P-AUROC.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

PARTS = [
    "ycb/banana.obj",
    "ycb/mustard_bottle.obj",
    "ycb/cracker_box.obj",
    "cad/box.STL",
    "cad/cycloidal.ply",
    "cad/idler_riser.STL",
]
CONFIGS = {
    "FPFH r=0.05": dict(radius_fraction=0.05),
    "FPFH r=0.10 (default)": dict(),
    "FPFH+raw r=0.10": dict(xyz_weight=10.0),
}
OBJECT_SCORES = {"max": 0.0, "top 1%": 0.01, "top 5%": 0.05, "top 10%": 0.10}


def main() -> None:
    from tqdm import tqdm

    import ad3d
    from ad3d import datasets as ds
    from ad3d.detectors.scoring import top_mean
    from ad3d.metrics import auroc
    from ad3d.synth import make_dataset

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"
    sources = sorted(Path(sys.argv[1]).iterdir()) if len(sys.argv) > 1 else [shared / p for p in PARTS]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_dataset(sources, "anomaly-shapenet", root, progress=True)
        cats = ds.categories("anomaly-shapenet", root)
        print(f"\n{len(cats)} parts; mean over parts")
        print(f"{'config':<28}" + "".join(f"{'O ' + k:>12}" for k in OBJECT_SCORES) + f"{'P-AUROC':>10}")
        for name, cfg in CONFIGS.items():
            obj, pts = {k: [] for k in OBJECT_SCORES}, []
            for cat in tqdm(cats, desc=name, leave=False):
                det = ad3d.create("patchcore", **cfg).fit(ds.load("anomaly-shapenet", root, cat, "train"))
                test = list(ds.load("anomaly-shapenet", root, cat, "test"))
                results = det.score_many(test)
                y = [s.label for s in test]
                for k, frac in OBJECT_SCORES.items():
                    obj[k].append(auroc(y, [top_mean(r.point_scores, frac) for r in results]))
                pts.append(
                    auroc(np.concatenate([s.labels for s in test]), np.concatenate([r.point_scores for r in results]))
                )
            print(f"{name:<28}" + "".join(f"{np.mean(v):>12.3f}" for v in obj.values()) + f"{np.mean(pts):>10.3f}")


if __name__ == "__main__":
    main()
