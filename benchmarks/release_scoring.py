"""R3D-AD and MC4AD scored the default way and the way their releases score, on the same trained network
(one fit per part and seed): paired, so the difference is the scoring alone.

    python benchmarks/release_scoring.py DATA FORMAT [--detector r3dad] [--seeds 0,1,2] [--iterations 500]

r3dad: object score = the mean of the top 3 % (default) vs PatchCore's reweighted max against the
reconstruction (the release's ROC_AP). mc4ad: the length of the joint force (default) vs its L1 norm (the
release's eval.py), the location baseline and the object rule re-derived under L1 on the same training
scans, as fit would have. Prints one row per job and the mean +- sample std over seeds of the per-part means.
"""

from __future__ import annotations

import argparse

import numpy as np

RELEASE = {"r3dad": {"object_score": "reweighted"}, "mc4ad": {"force_norm": 1}}


def rescore(det, train) -> None:
    """After set_params: redo what fit decides after training (baseline, object rule) on its scans."""
    prepared = det._prepare([det.aligned(s)[0] for s in train])
    n_val = max(1, len(prepared) // 4) if len(prepared) >= 3 else 0
    fit_part, val = (prepared[:-n_val], prepared[-n_val:]) if n_val else (prepared, prepared)
    det._finish(fit_part, val)


def main() -> None:
    import ad3d
    from ad3d import datasets
    from ad3d.pipeline import normal_splits, score_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("format")
    parser.add_argument("--detector", default="r3dad", choices=sorted(RELEASE))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args()
    rows = []
    for category in datasets.categories(args.format, args.data):
        train, _ = normal_splits(args.data, args.format, category)
        for seed in map(int, args.seeds.split(",")):
            det = ad3d.create(args.detector, iterations=args.iterations, eval_every=100, seed=seed).fit(train)
            for variant in ("default", "release"):
                if variant == "release":
                    det.set_params(**RELEASE[args.detector])
                    if args.detector == "mc4ad":  # the baseline and object rule were derived under L2
                        rescore(det, train)
                row = score_split(det, args.data, args.format, category)[0]
                rows.append({"variant": variant, "category": category, "seed": seed, **row})
                print(
                    f"{args.detector} {variant:8s} {category} s{seed}: O {row['object_auroc']:.3f} "
                    f"P {row['point_auroc']:.3f} AUPRO {row['aupro']:.3f}",
                    flush=True,
                )
    print(f"\n{args.detector}, {args.iterations} steps, seeds {args.seeds}: mean +- std over seeds of the part means")
    for variant in ("default", "release"):
        per_seed = {
            key: [
                np.mean([r[key] for r in rows if r["variant"] == variant and r["seed"] == s])
                for s in {r["seed"] for r in rows}
            ]
            for key in ("object_auroc", "point_auroc", "aupro")
        }
        print(
            variant,
            "  ".join(
                f"{k} {np.mean(v):.3f} +- {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}" for k, v in per_seed.items()
            ),
        )


if __name__ == "__main__":
    main()
