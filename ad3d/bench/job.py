"""One benchmark job, (detector, category, seed): fit, calibrate, score the test split, measure. The same
code backs `ad3d eval`; `ad3d bench` runs many of them."""

from __future__ import annotations

import hashlib
import json
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CURVE_POINTS = 201  # ROC and PRO curves are kept on this many evenly spaced FPR values
THUMBNAIL_POINTS = 8192  # the best and the worst-scored defective scan are kept at most this size


@dataclass(frozen=True)
class Job:
    """What one job fits and scores. `label` names the detector variant in tables; `key` identifies the
    job's configuration and data (the label excluded), so a renamed variant is not recomputed and a
    regenerated dataset is."""

    detector: str
    data: str
    format: str
    category: str
    seed: int = 0
    params: dict = field(default_factory=dict)
    label: str = ""
    preprocess: str = "none"
    fpr: float = 0.01
    cpus: int | None = None  # torch threads for the job; None leaves them as they are
    data_fingerprint: str = ""  # DataSource.fingerprint: the same configuration on changed data is a new job

    @property
    def key(self) -> str:
        config = {k: v for k, v in asdict(self).items() if k not in ("label", "cpus")}
        config["data"] = str(Path(self.data).absolute())
        blob = json.dumps(config, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.label or self.detector

    def describe(self) -> dict:
        """What a results row says of its job."""
        return {
            "key": self.key,
            "label": self.name,
            "detector": self.detector,
            "category": self.category,
            "seed": self.seed,
            "params": self.params,
            "data": self.data,
            "format": self.format,
        }

    @property
    def wants_gpu(self) -> bool:
        """Whether the job would run on a GPU if it had one: the detector's `device` is 'auto' or 'cuda...'."""
        import inspect

        from ad3d.detectors.registry import detector_class

        parameter = inspect.signature(detector_class(self.detector).__init__).parameters.get("device")
        device = self.params.get("device", parameter.default if parameter else "cpu")
        return device == "auto" or str(device).startswith("cuda")


def run_job(job: Job, *, raise_errors: bool = False, details: bool = True) -> tuple[dict, dict]:
    """Run `job`: (row, details). The row holds every metric, times, peak memory, the learned size, the
    versions; a failure is a row with status 'error' and the message (raised instead with raise_errors).
    details: arrays for the report (object scores, ROC and PRO curves, the best and worst defective scans),
    computed only when asked for (`ad3d eval` does not)."""
    row = {
        **job.describe(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "versions": versions(),
    }
    started = time.perf_counter()
    arrays: dict = {}
    try:
        row.update(_fit_and_score(job, arrays if details else None))
        row["status"] = "ok"
    except Exception as e:
        if raise_errors:
            raise
        row.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        arrays = {}
    row["wall_s"] = time.perf_counter() - started
    return row, arrays


def _fit_and_score(job: Job, details: dict | None) -> dict:
    import torch

    from ad3d.detectors.registry import detector_class, param_names
    from ad3d.pipeline import fit_and_score

    if job.cpus:  # the same thread count wherever the job runs: the same numbers
        torch.set_num_threads(job.cpus)
    takes_seed = "seed" in param_names(detector_class(job.detector))  # a third-party detector may have none
    params = {**job.params, "seed": job.seed} if takes_seed else dict(job.params)
    load_options = {} if job.preprocess == "none" else {"preprocess": job.preprocess}
    row, _, test, results = fit_and_score(
        job.detector, params, job.data, job.format, job.category, fpr=job.fpr, load_options=load_options
    )
    if details is not None:
        details.update(curves(test, results))
        details.update(extremes(test, results))
    return row


def curves(test: list, results: list) -> dict:
    """Object scores and labels; object ROC and PRO (image maps where every scan has one, else points) on
    an even FPR grid."""
    from sklearn.metrics import roc_curve

    from ad3d.metrics import image_regions, point_regions, pro_curve

    labels = np.array([-1 if s.label is None else s.label for s in test])
    scores = np.array([r.object_score for r in results], dtype=np.float64)
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    out = {"object_scores": scores, "object_labels": labels, "fpr": grid}
    if {0, 1} <= set(labels.tolist()):
        fpr, tpr, _ = roc_curve(labels, scores)
        out["roc_tpr"] = np.interp(grid, fpr, tpr)
    if all(s.labels is not None for s in test) and any(s.labels.any() for s in test):
        if all(r.image_scores is not None and s.mask is not None for s, r in zip(test, results)):
            region = image_regions([s.mask for s in test])
            maps = [r.image_scores for r in results]
        else:
            region = point_regions([s.labels for s in test], [s.points for s in test])
            maps = [r.point_scores for r in results]
        fpr, pro = pro_curve(np.concatenate([np.ravel(m) for m in maps]), region)
        out["pro"] = np.interp(grid, fpr, pro)
    return out


def extremes(test: list, results: list) -> dict:
    """The defective test scans with the highest ('best') and the lowest ('worst') object score: points
    (an even subset), point scores and ground truth, for the report's overlay thumbnails."""
    from ad3d.ops import even_subset

    defective = [i for i, s in enumerate(test) if s.label == 1]
    if not defective:
        return {}
    ranked = sorted(defective, key=lambda i: results[i].object_score)
    out = {}
    for which, i in (("best", ranked[-1]), ("worst", ranked[0])):
        scan, result = test[i], results[i]
        keep = np.sort(even_subset(scan.points, THUMBNAIL_POINTS))
        out[f"{which}_points"] = scan.points[keep]
        out[f"{which}_scores"] = result.point_scores[keep].astype(np.float32)
        out[f"{which}_gt"] = (scan.labels[keep] if scan.labels is not None else np.zeros(len(keep))).astype(np.uint8)
        out[f"{which}_name"] = np.array(Path(scan.path or f"scan{i}").name)
        out[f"{which}_object_score"] = np.array(result.object_score)
    return out


def versions() -> dict:
    """What produced a row: ad3d and the libraries its numbers depend on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("ad3d", "numpy", "torch", "open3d", "scikit-learn"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out
