"""Per-part, per-defect-kind diagnostics for one detector: where it wins and where it fails.

    python benchmarks/diagnose.py DETECTOR DATA FORMAT [--param key=value ...] [--categories a,b]
                                  [--seeds 0,1,2] [--out results.json] [--save models/]
                                  [--models models/ --set key=value ...]

For every category (and seed) the detector is fitted and calibrated as `ad3d eval` does, and every
test scan is scored. Printed: the eval row per category; then, per defect kind, O-AUROC of that kind
against the good scans and P-AUROC over the scans of that kind plus the good scans, each as the mean
over categories; the mean object score of good and defective scans per category (an inverted score
shows up as good above defective); and alignment residuals where the detector aligns. With several
seeds the means come with their spread (sample standard deviation over seeds). --out keeps every
scan's object score and every number printed, for later tables.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def kind_metrics(results, scans) -> dict[str, dict]:
    """O-AUROC (kind vs good) and P-AUROC (kind + good scans' points) for each defect kind."""
    from ad3d.metrics import evaluate

    good = [i for i, s in enumerate(scans) if s.label == 0]
    out = {}
    for kind in sorted({s.defect_type for s in scans if s.label == 1}):
        pick = good + [i for i, s in enumerate(scans) if s.defect_type == kind and s.label == 1]
        row = evaluate([results[i] for i in pick], [scans[i] for i in pick])
        out[kind] = {"object_auroc": row.get("object_auroc"), "point_auroc": row.get("point_auroc")}
    return out


def run(
    detector: str,
    params: dict,
    data: str,
    fmt: str,
    categories: list[str],
    seed: int,
    save: str | None = None,
    models: str | None = None,
    override: dict | None = None,
) -> list[dict]:
    from tqdm import tqdm

    import ad3d
    from ad3d import datasets
    from ad3d.metrics import evaluate
    from ad3d.pipeline import fit_category

    rows = []
    for cat in tqdm(categories, desc=f"{detector} seed {seed}", unit="category"):
        if models:  # rescore saved fits; their fit time is not known here
            det, info = ad3d.load(f"{models}/{cat}_seed{seed}.ad3d"), {"fit_s": float("nan")}
        else:
            det, info = fit_category(detector, {**params, "seed": seed}, data, fmt, cat)
        if save:
            det.save(f"{save}/{cat}_seed{seed}.ad3d")
        for key, value in (override or {}).items():
            setattr(det, key, value)
        test = list(datasets.load(fmt, data, cat, "test"))
        results = det.score_many(test)
        rows.append(
            {
                "category": cat,
                "seed": seed,
                "fit_s": info["fit_s"],
                **evaluate(results, test),
                "score_ms": 1e3 * float(np.mean([r.timings["score_s"] for r in results])),
                "kinds": kind_metrics(results, test),
                "scans": [
                    {
                        "path": s.path,
                        "kind": s.defect_type,
                        "label": s.label,
                        "object": r.object_score,
                        "alignment": r.alignment and {k: r.alignment[k] for k in ("residual", "fitness", "ok")},
                    }
                    for s, r in zip(test, results)
                ],
            }
        )
        print(
            f"  {cat} seed {seed}: O-AUROC {rows[-1]['object_auroc']:.3f} P-AUROC {rows[-1]['point_auroc']:.3f}",
            flush=True,
        )
    return rows


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f}" + (f"±{np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def per_seed_means(rows: list[dict], get) -> list[float]:
    """The mean over categories of get(row), one value per seed."""
    seeds = sorted({r["seed"] for r in rows})
    return [float(np.mean([v for r in rows if r["seed"] == s and (v := get(r)) is not None])) for s in seeds]


def report(rows: list[dict]) -> None:
    cats = sorted({r["category"] for r in rows})
    print(f"\n{'category':<18} {'O-AUROC':>13} {'P-AUROC':>13} {'AUPRO':>13} {'P-AP':>13} {'fit s':>6} {'score ms':>8}")
    for cat in cats + ["mean"]:
        sel = rows if cat == "mean" else [r for r in rows if r["category"] == cat]
        vals = {
            k: (per_seed_means(sel, lambda r, k=k: r.get(k)) if cat == "mean" else [r.get(k) for r in sel])
            for k in ("object_auroc", "point_auroc", "aupro", "ap")
        }
        print(
            f"{cat:<18} "
            + " ".join(f"{spread(vals[k]):>13}" for k in vals)
            + f" {np.mean([r['fit_s'] for r in sel]):>6.0f} {np.mean([r['score_ms'] for r in sel]):>8.0f}"
        )
    kinds = sorted({k for r in rows for k in r["kinds"]})
    print(f"\n{'defect kind':<12} {'O-AUROC':>13} {'P-AUROC':>13}   (mean over categories; kind vs good scans)")
    for kind in kinds:
        o = per_seed_means(rows, lambda r: r["kinds"].get(kind, {}).get("object_auroc"))
        p = per_seed_means(rows, lambda r: r["kinds"].get(kind, {}).get("point_auroc"))
        print(f"{kind:<12} {spread(o):>13} {spread(p):>13}")
    print(f"\n{'category':<18} {'good mean':>10} {'defective':>10} {'residual max':>13} {'not aligned':>12}")
    for cat in cats:
        scans = [s for r in rows if r["category"] == cat for s in r["scans"]]
        good = np.mean([s["object"] for s in scans if s["label"] == 0])
        bad = np.mean([s["object"] for s in scans if s["label"] == 1])
        aligned = [s["alignment"] for s in scans if s["alignment"]]
        res = f"{max(a['residual'] for a in aligned):.2f}" if aligned else "-"
        flagged = f"{sum(not a['ok'] for a in aligned)}/{len(aligned)}" if aligned else "-"
        print(f"{cat:<18} {good:>10.4g} {bad:>10.4g} {res:>13} {flagged:>12}")


def main() -> None:
    from ad3d import datasets
    from ad3d.detectors.registry import parse_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detector")
    ap.add_argument("data")
    ap.add_argument("format")
    ap.add_argument("--param", action="append", help="key=value on top of the detector's defaults")
    ap.add_argument("--categories", help="comma-separated; default all")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--out", help="write every row and scan score as JSON")
    ap.add_argument("--save", help="keep each fitted model in this folder (CATEGORY_seedN.ad3d)")
    ap.add_argument("--models", help="score the models saved in this folder by --save instead of fitting")
    ap.add_argument(
        "--set",
        action="append",
        help="attribute=value set on each model before scoring "
        "(score-time settings, or learned scalars like object_reduce_)",
    )
    args = ap.parse_args()
    cats = args.categories.split(",") if args.categories else datasets.categories(args.format, args.data)
    params = parse_params(args.param)
    rows = [
        row
        for seed in map(int, args.seeds.split(","))
        for row in run(
            args.detector, params, args.data, args.format, cats, seed, args.save, args.models, parse_params(args.set)
        )
    ]
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"detector": args.detector, "params": params, "data": args.data, "rows": rows}, f, indent=1)
    report(rows)


if __name__ == "__main__":
    main()
