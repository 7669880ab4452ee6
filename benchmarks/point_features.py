"""Do a point backbone's features separate planted defects? Per part: a bank of group features from
normal scans, each test point scored by the distance of its group's feature to the nearest bank
feature (carried to points by inverse-distance weights of the 3 nearest centres), P-AUROC over the
test scans. Compares Point-MAE weights (e.g. from `ad3d pretrain point-mae`) with the same network
randomly initialised (several seeds) and with FPFH, on the same scans.

    python benchmarks/point_features.py --weights W.safetensors [--parts a.STL,b.STL] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

# the shared data beside the checkout, or where AD3D_SHARED_DATA points (as the tests find it)
SHARED = Path(os.environ.get("AD3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "meshes"
KINDS = ("bulge", "dent", "crack", "hole", "concavity", "scratch")


def scans_of(mesh: Path, points: int):
    from ad3d.io import read_scan
    from ad3d.synth import plant

    normal = [read_scan(mesh, sample=points, seed=s) for s in (1, 2)]
    test = [plant(read_scan(mesh, sample=points, seed=10 + i), kind, seed=i) for i, kind in enumerate(KINDS)]
    return normal, test


def point_auroc(backbone, normal, test) -> float:
    import torch

    from ad3d import ops
    from ad3d.detectors.memory_bank import nearest_distances
    from ad3d.metrics import auroc

    bank = np.concatenate([backbone(s.points).features for s in normal])
    labels, scores = [], []
    for scan in test:
        f = backbone(scan.points)
        group_scores = torch.from_numpy(nearest_distances(f.features, bank))
        scores.append(
            ops.interpolate(
                torch.from_numpy(scan.points), torch.from_numpy(f.centres.astype(np.float32)), group_scores.float()
            ).numpy()
        )
        labels.append(scan.labels)
    return auroc(np.concatenate(labels), np.concatenate(scores))


def main() -> None:
    from tqdm import tqdm

    from ad3d.features import point_backbone
    from ad3d.features.point_mae import encoder_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="Point-MAE weights file")
    parser.add_argument("--parts", help="comma-separated mesh paths under shared/data/meshes (default: cad/*)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the random initialisations")
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=32)
    args = parser.parse_args()
    parts = [SHARED / p for p in args.parts.split(",")] if args.parts else sorted((SHARED / "cad").iterdir())
    _, recorded = encoder_state(Path(args.weights))
    arch = {k: recorded[k] for k in ("trans_dim", "depth", "num_heads", "encoder_dims") if k in recorded}
    shape = {"num_group": args.groups, "group_size": args.group_size}
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for mesh in tqdm(parts, desc="parts", unit="part"):
        normal, test = scans_of(mesh, args.points)
        row = {
            "part": mesh.stem,
            "pretrained": point_auroc(point_backbone("point-mae", weights=args.weights, **shape), normal, test),
            "random": [
                point_auroc(point_backbone("point-mae", random_init=True, seed=s, **shape, **arch), normal, test)
                for s in seeds
            ],
            "fpfh": point_auroc(
                point_backbone("fpfh", num_groups=args.groups, group_size=args.group_size), normal, test
            ),
        }
        rows.append(row)
        print(
            f"  {row['part']}: pretrained {row['pretrained']:.3f}  random {np.mean(row['random']):.3f}"
            f"±{np.std(row['random'], ddof=1) if len(seeds) > 1 else 0:.3f}  fpfh {row['fpfh']:.3f}",
            flush=True,
        )
    print(f"\n| part | Point-MAE pretrained | same network, random init (seeds {args.seeds}) | FPFH |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['part']} | {r['pretrained']:.3f} | {np.mean(r['random']):.3f} "
            f"(min {min(r['random']):.3f}, max {max(r['random']):.3f}) | {r['fpfh']:.3f} |"
        )
    mean_random = [np.mean([r["random"][i] for r in rows]) for i in range(len(seeds))]
    print(
        f"| **mean** | **{np.mean([r['pretrained'] for r in rows]):.3f}** | **{np.mean(mean_random):.3f}** "
        f"(per seed {', '.join(f'{m:.3f}' for m in mean_random)}) | **{np.mean([r['fpfh'] for r in rows]):.3f}** |"
    )


if __name__ == "__main__":
    main()
