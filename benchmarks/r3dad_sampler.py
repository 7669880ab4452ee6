"""R3D-AD's accuracy/latency trade-off over samplers: fit once per category, then score the test split
with full ancestral DDPM and with DDIM at several step counts (same model, same run).

    python benchmarks/r3dad_sampler.py DATA FORMAT CATS [key=value ...]   # extra r3dad params
"""

from __future__ import annotations

import sys

SETTINGS = {"DDPM (every step)": {"sampler": "ddpm"}, "DDIM 20": {"sampler": "ddim", "sample_steps": 20},
            "DDIM 10": {"sampler": "ddim", "sample_steps": 10}, "DDIM 5": {"sampler": "ddim", "sample_steps": 5},
            "DDIM 2": {"sampler": "ddim", "sample_steps": 2}}


def main() -> None:
    import numpy as np
    from tqdm import tqdm

    from ad3d.pipeline import evaluate_category, fit_category, parse_params
    from ad3d.report import format_table

    data, fmt, cats, *extra = sys.argv[1:]
    params = parse_params(extra)
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for cat in tqdm(cats.split(","), desc="categories"):
        det, _ = fit_category("r3dad", params, data, fmt, cat)
        for name, setting in SETTINGS.items():
            for key, value in setting.items():
                setattr(det, key, value)
            results[name].append(evaluate_category(det, data, fmt, cat))
    rows = [{"category": name, **{k: float(np.mean([r[k] for r in rs])) for k in ("object_auroc", "point_auroc", "ap", "score_ms")}}
            for name, rs in results.items()]
    base = rows[0]["score_ms"]
    for row in rows:
        row["speedup"] = base / row["score_ms"]
    print(format_table(rows, [("category", "sampler", ""), ("object_auroc", "O-AUROC", ".3f"),
                              ("point_auroc", "P-AUROC", ".3f"), ("ap", "P-AP", ".3f"), ("score_ms", "score ms", ".0f"),
                              ("speedup", "x vs DDPM", ".1f")]))


if __name__ == "__main__":
    main()
