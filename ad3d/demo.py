"""`ad3d demo`: shipped CAD parts -> semi-synthetic dataset -> fitted baseline -> table, reports, images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ad3d.errors import ConfigError

DEMO_MESHES = Path(__file__).resolve().parents[1] / "datasets" / "demo"
MARKER = ".ad3d-demo"


def run_demo(
    out: str | Path = "runs/demo",
    meshes: str | Path | None = None,
    quiet: bool = False,
    detector: str = "patchcore",
    points: int = 4096,
) -> list[dict]:
    """Write data/, models/, reports/, images/ and eval.{json,md} under `out`; return the table rows."""
    from ad3d import datasets
    from ad3d.pipeline import EVAL_COLUMNS, fit_category, score_split, with_mean
    from ad3d.report import format_table, markdown_table
    from ad3d.synth import make_dataset
    from ad3d.synth.dataset import MESH_SUFFIXES

    out = Path(out)
    src = Path(meshes) if meshes else DEMO_MESHES
    sources = sorted(p for p in src.glob("*") if p.suffix.lower() in MESH_SUFFIXES) if src.is_dir() else []
    if not sources:
        raise ConfigError(f"no meshes (.obj .stl .off .ply) in '{src}'")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(f"'{out}' exists and was not written by ad3d demo; choose another --out")
    for sub in ("data", "models", "reports", "images"):  # the demo's own earlier output
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by ad3d demo; its subfolders are replaced on every run\n")
    say = (lambda *a: None) if quiet else print
    say(f"1/3 synthesising {len(sources)} parts with planted defects -> {out / 'data'}")
    make_dataset(sources, "anomaly-shapenet", out / "data", points=points, progress=not quiet)
    rows = []
    say(f"2/3 fitting {detector} per part and scoring the test scans")
    for cat in datasets.categories("anomaly-shapenet", out / "data"):
        det, info = fit_category(detector, {}, out / "data", "anomaly-shapenet", cat, progress=not quiet)
        det.save(out / "models" / f"{cat}.ad3d")
        row, test, results = score_split(det, out / "data", "anomaly-shapenet", cat, progress=not quiet)
        rows.append({**row, "fit_s": info["fit_s"]})
        _write_reports(det, out, cat, test, results)
    table = with_mean(rows)
    (out / "eval.json").write_text(json.dumps({"detector": detector, "rows": table}, indent=2))
    (out / "eval.md").write_text(
        f"# {detector} on the demo parts (semi-synthetic)\n\n" + markdown_table(table, EVAL_COLUMNS)
    )
    say(f"3/3 results (semi-synthetic data, not a benchmark):\n{format_table(table, EVAL_COLUMNS)}")
    say(f"written: {out / 'eval.md'}, reports/ (PLY + JSON per scan), images/ (overlays), models/")
    return table


def _write_reports(det, out: Path, cat: str, test: list, results: list) -> None:
    """PLY + JSON per test scan (the results the table was computed from: nothing scored twice), and an
    overlay image of the highest-scored defective scan."""
    from ad3d.report import write_result
    from ad3d.viewers import render

    best = None
    for scan, result in zip(test, results):
        write_result(out / "reports" / cat, Path(scan.path).stem, scan, result, det.name, det.thresholds())
        if scan.label == 1 and (best is None or result.object_score > best[1].object_score):
            best = (scan, result)
    if best is not None:
        scan, result = best
        try:
            render(
                scan,
                result.point_scores,
                threshold=det.point_threshold_,
                gt=scan.labels,
                regions=result.regions,
                screenshot=out / "images" / f"{cat}_{scan.defect_type}.png",
            )
        except ConfigError as e:  # pyvista missing: the numbers still stand
            print(f"ad3d: no overlay image ({e})")
