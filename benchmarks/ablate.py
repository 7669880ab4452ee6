"""Fit a detector once per variant and category and print the mean metrics per variant: the
ablations behind the r3dad and mc4ad defaults.

    python benchmarks/ablate.py DATA FORMAT DETECTOR CATS "name:key=value;key=value" ...
    python benchmarks/ablate.py D anomaly-shapenet mc4ad angle_block0,banana0 "default:" "no sym:sym_weight=0"

A variant's text after the colon is `;`-separated key=value pairs on top of the detector's defaults
(`--param` syntax: 64,128 is a tuple). Each row: mean O-AUROC, P-AUROC, P-AP, fit s, score ms.
"""

from __future__ import annotations

import sys


def main() -> None:
    from ad3d.detectors.registry import parse_params
    from ad3d.pipeline import evaluate_dataset
    from ad3d.report import format_table, mean_row

    data, fmt, detector, cats, *variants = sys.argv[1:]
    rows = []
    for variant in variants:
        name, _, spec = variant.partition(":")
        params = parse_params([p for p in spec.split(";") if p])
        per_cat = evaluate_dataset(detector, params, data, fmt, cats.split(","), progress=True)
        for row in per_cat:
            print(
                f"  {name} {row['category']}: O-AUROC {row['object_auroc']:.3f} P-AUROC {row['point_auroc']:.3f}",
                flush=True,
            )
        rows.append({**mean_row(per_cat, ["object_auroc", "point_auroc", "ap", "fit_s", "score_ms"]), "category": name})
    print(
        format_table(
            rows,
            [
                ("category", "variant", ""),
                ("object_auroc", "O-AUROC", ".3f"),
                ("point_auroc", "P-AUROC", ".3f"),
                ("ap", "P-AP", ".3f"),
                ("fit_s", "fit s", ".0f"),
                ("score_ms", "score ms", ".0f"),
            ],
        )
    )


if __name__ == "__main__":
    main()
