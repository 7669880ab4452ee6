"""What `ad3d score` writes per scan: a PLY with a `score` property and a JSON report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ad3d.types import AnomalyResult, Scan


def result_json(scan: Scan, result: AnomalyResult, detector: str) -> dict:
    return {
        "scan": scan.path,
        "detector": detector,
        "points": len(scan),
        "units": scan.units,
        "object_score": result.object_score,
        "threshold": result.threshold,
        "decision": result.decision,
        "is_anomalous": result.is_anomalous,
        "max_point_score": float(result.point_scores.max()),
        "points_by_decision": point_counts(result),
        "regions": [
            {
                "points": int(len(r.indices)),
                "centroid": r.centroid.tolist(),
                "extent": r.extent.tolist(),
                "bbox_min": r.bbox_min.tolist(),
                "bbox_max": r.bbox_max.tolist(),
                "area": r.area,
                "max_score": r.max_score,
                "max_deviation": r.max_deviation,
            }
            for r in result.regions
        ],
        "alignment": result.alignment,
    }


def write_result(
    out_dir: Path,
    stem: str,
    scan: Scan,
    result: AnomalyResult,
    detector: str,
    thresholds: dict[str, float | None],
    timings: bool = False,
) -> tuple[Path, Path]:
    """Write `<stem>.ply` and `<stem>.json` (each atomically); the JSON is written last. Both are a function of
    the inputs alone (the same scan and model, the same bytes: an inspection record can be checked by redoing
    it); timings=True adds each step's time and peak memory to the JSON."""
    from ad3d.io import write_scan
    from ad3d.io._common import atomic_output

    ply, report = out_dir / f"{stem}.ply", out_dir / f"{stem}.json"
    started = time.perf_counter()
    measured = {} if result.deviations is None else {"deviation": result.deviations}
    write_scan(ply, scan, scalars={"score": result.point_scores, **measured})
    doc = result_json(scan, result, detector)
    if timings:
        doc["timings"] = {**result.timings, "write_ply_s": time.perf_counter() - started, "write_peak_mb": peak_mb()}
    doc["thresholds"] = thresholds
    doc["point_threshold"] = thresholds.get("point")
    try:
        with atomic_output(report) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
    except BaseException:
        ply.unlink(missing_ok=True)
        raise
    return ply, report


def peak_mb() -> float:
    """This process's peak resident memory so far, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def point_counts(result: AnomalyResult) -> dict | None:
    """How many points the three-way point decision calls normal, uncertain and defective."""
    if result.point_decisions is None:
        return None
    counts = np.bincount(result.point_decisions, minlength=3)
    return {"normal": int(counts[0]), "uncertain": int(counts[1]), "defective": int(counts[2])}


def summary_line(name: str, result: AnomalyResult) -> str:
    decision = result.decision or "uncalibrated"
    regions = f", {len(result.regions)} region{'s' if len(result.regions) != 1 else ''}" if result.regions else ""
    counts = point_counts(result)
    points = f", points {counts['defective']} defective / {counts['uncertain']} uncertain" if counts else ""
    unaligned = (
        ""
        if result.alignment is None or result.alignment["ok"]
        else f", NOT ALIGNED to the part's reference (residual {result.alignment['residual']:.2f} spacings)"
    )
    return f"{name}: {decision.upper():<12} score {result.object_score:.4g}{regions}{points}{unaligned}"


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, fmt) if fmt else str(value)


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows of dicts as an aligned text table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]] + [[_cell(row, k, f) for k, _, f in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells
    )


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(_cell(r, k, f) for k, _, f in columns) + " |\n" for r in rows)
    return head + body


def mean_row(rows: list[dict], keys: list[str]) -> dict:
    out = {"category": "mean"}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def describe_lines(rows: list[dict]) -> list[str]:
    """`datasets.describe` as a table: scans per split and defects per category."""
    lines = [f"{'category':<20} {'train':>6} {'valid':>6} {'test':>6}  defects"]
    for r in rows:
        defects = ", ".join(f"{k} {v}" for k, v in r.get("defects", {}).items())
        counts = " ".join(f"{r.get(split, 0):>6}" for split in ("train", "validation", "test"))
        lines.append(f"{r['category']:<20} {counts}  {defects}")
    return lines


def verify_lines(rows: list[dict]) -> list[str]:
    """`datasets.verify` as a table, then each problem on its own line."""
    lines = [f"{'category':<20} {'scans':>6} {'anomalous':>9} {'problems':>8}"]
    lines += [f"{r['category']:<20} {r['scans']:>6} {r['anomalous']:>9} {len(r['problems']):>8}" for r in rows]
    return lines + [f"  {r['category']}: {p}" for r in rows for p in r["problems"]]
