"""Detection metrics as the papers define them: object/point AUROC, AP, F1-max and AUPRO@0.3.

All are exact (every distinct score is a threshold) and vectorised: one sort of the pooled scores,
so millions of points take about a second. AUPRO follows the MVTec definition: the FPR is over all
normal pixels (points) of all test samples, PRO is the mean overlap over ground-truth regions, each
region weighted equally, the curve integrated up to max_fpr and divided by it. Regions are the
8-connected components of a mask for images and, for point clouds, the connected components of the
ground-truth points on a kNN graph of the scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ad3d.types import AnomalyResult, Scan


def _as_binary(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("y_score holds NaN or inf")
    return y.astype(bool), s


def _ranked_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positives at each distinct threshold, scores taken in descending order."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[ends]
    return ends + 1 - tps, tps


def _need_both(y: np.ndarray, name: str) -> None:
    if y.all() or not y.any():
        raise ValueError(f"{name} needs both normal and anomalous samples; only one class is present")


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve (ties handled as scikit-learn's roc_auc_score does)."""
    y, s = _as_binary(y_true, y_score)
    _need_both(y, "AUROC")
    fps, tps = _ranked_counts(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return float(np.trapezoid(tpr, fpr))


def average_precision(y_true, y_score) -> float:
    """AP = sum over thresholds of (R_n - R_(n-1)) * P_n, as scikit-learn's average_precision_score."""
    y, s = _as_binary(y_true, y_score)
    _need_both(y, "AP")
    fps, tps = _ranked_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(y_true, y_score) -> float:
    """The best F1 over all thresholds."""
    y, s = _as_binary(y_true, y_score)
    _need_both(y, "F1-max")
    fps, tps = _ranked_counts(y, s)
    f1 = 2 * tps / (tps + fps + tps[-1])
    return float(f1.max())


def pro_curve(scores: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold of pooled scores.

    region: per element, -1 for a normal element, else the id (0..R-1) of its ground-truth region.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    region = np.asarray(region).ravel()
    normal = region < 0
    if normal.all() or not normal.any():
        raise ValueError("AUPRO needs normal and anomalous elements; only one kind is present")
    sizes = np.bincount(region[~normal])
    if (sizes == 0).any():
        raise ValueError("region ids must be 0..R-1 with no gaps")
    weight = np.zeros(s.size)
    weight[~normal] = 1.0 / (len(sizes) * sizes[region[~normal]])
    order = np.argsort(-s, kind="stable")
    s, normal, weight = s[order], normal[order], weight[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    fpr = np.cumsum(normal)[ends] / normal.sum()
    pro = np.cumsum(weight)[ends]
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def area_up_to(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """Trapezoid area under the curve for FPR in [0, max_fpr], divided by max_fpr."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    i = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, y = fpr[:i], pro[:i]
    if i < len(fpr):  # close the curve exactly at max_fpr by linear interpolation
        t = (max_fpr - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x, y = np.r_[x, max_fpr], np.r_[y, pro[i - 1] + t * (pro[i] - pro[i - 1])]
    return float(np.trapezoid(y, x) / max_fpr)


def image_regions(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per pixel of the stacked masks, -1 or the id of its 8-connected defect region (ids run on)."""
    from scipy import ndimage

    out, next_id = [], 0
    for mask in masks:
        lab, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), int))
        out.append(np.where(lab > 0, lab - 1 + next_id, -1).ravel())
        next_id += n
    return np.concatenate(out)


def point_regions(labels: Sequence[np.ndarray], points: Sequence[np.ndarray], k: int = 8) -> np.ndarray:
    """Per point, -1 or the id of its defect region: defective points joined on the scan's kNN graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    out, next_id = [], 0
    for lab, pts in zip(labels, points):
        lab = np.asarray(lab).astype(bool)
        region = np.full(lab.size, -1)
        bad = np.flatnonzero(lab)
        if bad.size:
            kk = min(k + 1, len(pts))
            _, nn = cKDTree(pts).query(pts[bad], k=kk, workers=-1)
            nn = nn.reshape(len(bad), kk)
            pos = np.full(lab.size, -1)
            pos[bad] = np.arange(bad.size)
            rows = np.repeat(np.arange(bad.size), kk)
            cols = pos[nn.ravel()]
            keep = cols >= 0
            graph = coo_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(bad.size, bad.size))
            n, comp = connected_components(graph, directed=False)
            region[bad] = comp + next_id
            next_id += n
        out.append(region)
    return np.concatenate(out)


def aupro(
    y_true: Sequence[np.ndarray],
    y_score: Sequence[np.ndarray],
    points: Sequence[np.ndarray] | None = None,
    *,
    max_fpr: float = 0.3,
    k: int = 8,
) -> float:
    """AUPRO@max_fpr over a test set: lists of masks and score maps (images), or of per-point labels and
    scores with `points` (point clouds, regions on a k-nearest-neighbour graph)."""
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_true)} ground truths but {len(y_score)} score arrays")
    for t, s in zip(y_true, y_score):
        if np.shape(t) != np.shape(s):
            raise ValueError(f"ground truth of shape {np.shape(t)} paired with scores of shape {np.shape(s)}")
    region = image_regions(y_true) if points is None else point_regions(y_true, points, k)
    scores = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in y_score])
    return area_up_to(*pro_curve(scores, region), max_fpr)


def evaluate(results: Sequence[AnomalyResult], scans: Sequence[Scan], *, max_fpr: float = 0.3) -> dict:
    """The standard table row for one category's test set.

    object_auroc / object_ap from object scores vs scan labels; point_auroc / ap (point AP) pooled over
    every point of every scan; aupro on image maps when every result has one and every scan a mask,
    else on points. A metric that the data cannot define (one class only) is None.
    """
    if len(results) != len(scans):
        raise ValueError(f"{len(results)} results for {len(scans)} scans")
    out: dict = {}
    y_obj = [s.label for s in scans]
    if all(v is not None for v in y_obj):
        obj = np.array([r.object_score for r in results])
        out["object_auroc"] = _maybe(auroc, y_obj, obj)
        out["object_ap"] = _maybe(average_precision, y_obj, obj)
    have_points = all(s.labels is not None for s in scans)
    if have_points:
        for r, s in zip(results, scans):
            if len(r.point_scores) != len(s):
                raise ValueError(f"{len(r.point_scores)} point scores for a scan of {len(s)} points ({s.path})")
        labels = np.concatenate([s.labels for s in scans])
        scores = np.concatenate([r.point_scores for r in results])
        out["point_auroc"] = _maybe(auroc, labels, scores)
        out["ap"] = _maybe(average_precision, labels, scores)
        if all(r.image_scores is not None and s.mask is not None for r, s in zip(results, scans)):
            out["aupro"] = _maybe(aupro, [s.mask for s in scans], [r.image_scores for r in results], max_fpr=max_fpr)
        else:
            out["aupro"] = _maybe(
                aupro,
                [s.labels for s in scans],
                [r.point_scores for r in results],
                [s.points for s in scans],
                max_fpr=max_fpr,
            )
    return out


def _maybe(metric, *args, **kwargs):
    try:
        return metric(*args, **kwargs)
    except ValueError as e:
        if "only one" in str(e):
            return None
        raise
