"""Score-time settings of a detector, one fit per category: fit once, then score the test split under
each setting (same model, same run) and print mean metrics and latency per setting. Used for R3D-AD's
sampler trade-off and for choosing its scoring defaults on a development set.

    python benchmarks/score_sweep.py DETECTOR DATA FORMAT CATS "name:key=value;..." ... [--fit key=value;...]
    python benchmarks/score_sweep.py r3dad D anomaly-shapenet a0,b0 "DDPM:sampler=ddpm" "DDIM 10:sample_steps=10"

Settings are attributes read only when scoring (sampler, sample_steps, start_step, smooth_k, coverage,
top_fraction, ...), or learned scalars to override (`object_reduce_=top`); every setting starts from the
fitted model's own values. The first setting is the reference for the speed-up column.
"""

from __future__ import annotations

import sys


def main() -> None:
    import numpy as np
    from tqdm import tqdm

    from ad3d.detectors.registry import parse_params
    from ad3d.pipeline import evaluate_category, fit_category
    from ad3d.report import format_table

    args = sys.argv[1:]
    fit_spec = ""
    if "--fit" in args:
        i = args.index("--fit")
        fit_spec = args[i + 1]
        del args[i : i + 2]
    detector, data, fmt, cats, *variants = args
    fit_params = parse_params([p for p in fit_spec.split(";") if p])
    settings = {
        name: parse_params([p for p in spec.split(";") if p]) for name, _, spec in (v.partition(":") for v in variants)
    }
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for cat in tqdm(cats.split(","), desc="categories"):
        det, _ = fit_category(detector, fit_params, data, fmt, cat)
        defaults = {**det.get_params(), **{k: getattr(det, k) for k in det._state_scalars}}
        for name, setting in settings.items():
            for key, value in {**defaults, **setting}.items():
                setattr(det, key, value)
            results[name].append(evaluate_category(det, data, fmt, cat))
    keys = ("object_auroc", "point_auroc", "aupro", "ap", "score_ms")
    rows = [{"category": name, **{k: float(np.mean([r[k] for r in rs])) for k in keys}} for name, rs in results.items()]
    for row in rows:
        row["speedup"] = rows[0]["score_ms"] / row["score_ms"]
    print(
        format_table(
            rows,
            [
                ("category", "setting", ""),
                ("object_auroc", "O-AUROC", ".3f"),
                ("point_auroc", "P-AUROC", ".3f"),
                ("aupro", "AUPRO", ".3f"),
                ("ap", "P-AP", ".3f"),
                ("score_ms", "score ms", ".0f"),
                ("speedup", "speed-up", ".1f"),
            ],
        )
    )


if __name__ == "__main__":
    main()
