"""How well the deviation detector measures: on planted defects of known height (`ad3d synth` writes them to
defects.json), each defect's region's max_deviation against the planted height, per defect kind.

    python benchmarks/deviation_accuracy.py DATA FORMAT [key=value ...]
    python benchmarks/deviation_accuracy.py runs/R_MEASURE anomaly-shapenet reference=runs/cad/{category}.stl

A defect is found when a region holds any of its labelled points (the region holding most is measured).
Error: max_deviation / height - 1; the table gives the mean and median of its magnitude, and its signed mean
(negative: the height under-read), over the found defects of each kind.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def measured(result, scan) -> float | None:
    """max_deviation of the region holding most of the scan's labelled points; None when none holds any."""
    hits = [(np.sum(scan.labels[r.indices]), r) for r in result.regions]
    hits = [h for h in hits if h[0] > 0]
    return max(hits, key=lambda h: h[0])[1].max_deviation if hits else None


def main() -> None:
    from tqdm import tqdm

    from ad3d import datasets
    from ad3d.pipeline import fit_category, parse_params
    from ad3d.report import format_table

    root, fmt, *params = sys.argv[1:]
    truth = json.loads((Path(root) / "defects.json").read_text())
    errors: dict[str, list] = defaultdict(list)
    missed: dict[str, int] = defaultdict(int)
    for cat in tqdm(datasets.categories(fmt, root), desc="categories"):
        det, _ = fit_category("deviation", parse_params(params), root, fmt, cat)
        for scan in datasets.load(fmt, root, cat, "test"):
            planted = truth[Path(scan.path).relative_to(root).as_posix()]
            if planted["height"] is None:
                continue
            value = measured(det.score(scan), scan)
            if value is None:
                missed[planted["kind"]] += 1
            else:
                errors[planted["kind"]].append(value / planted["height"] - 1)
    rows = []
    for kind in sorted(set(errors) | set(missed)):
        e = np.array(errors[kind])
        rows.append(
            {
                "kind": kind,
                "found": f"{len(e)}/{len(e) + missed[kind]}",
                "mean": float(np.abs(e).mean()) if len(e) else float("nan"),
                "median": float(np.median(np.abs(e))) if len(e) else float("nan"),
                "signed": float(e.mean()) if len(e) else float("nan"),
            }
        )
    print(f"max_deviation against the planted height on {root} ({' '.join(params) or 'defaults'})")
    columns = [
        ("kind", "defect", ""),
        ("found", "found", ""),
        ("mean", "mean |error| / height", ".1%"),
        ("median", "median", ".1%"),
        ("signed", "signed mean", "+.1%"),
    ]
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
