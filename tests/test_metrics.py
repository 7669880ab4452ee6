"""Metrics against scikit-learn on random data and against hand-worked AUPRO values."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ad3d import metrics
from ad3d.types import AnomalyResult, Scan


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 5000))
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.3 * y, int(rng.integers(1, 4)))  # rounding makes many ties
    assert abs(metrics.auroc(y, s) - roc_auc_score(y, s)) < 1e-9
    assert abs(metrics.average_precision(y, s) - average_precision_score(y, s)) < 1e-9
    p, r, _ = precision_recall_curve(y, s)
    assert abs(metrics.f1_max(y, s) - np.max(2 * p * r / np.maximum(p + r, 1e-300))) < 1e-9


def test_single_class_is_an_error():
    with pytest.raises(ValueError, match="only one class"):
        metrics.auroc([1, 1], [0.2, 0.3])


def test_aupro_hand_worked_single_region():
    # 4 normal pixels (0.1 .. 0.4), one 2-pixel region scored 0.35 and 0.05.
    mask = np.array([[0, 0, 0, 0, 1, 1]])
    score = np.array([[0.1, 0.2, 0.3, 0.4, 0.35, 0.05]])
    # curve: (0,0) -> 0.4: (0.25, 0) -> 0.35: (0.25, 0.5) -> 0.3: (0.5, 0.5); area to 0.3 = 0.05*0.5
    assert metrics.aupro([mask], [score]) == pytest.approx(0.025 / 0.3, abs=1e-12)


def test_aupro_weights_each_region_equally():
    # region A: 1 pixel found at once; region B: 3 pixels never found before FPR 0.3 -> PRO = 0.5
    mask = np.zeros((5, 5), int)
    mask[0, 0] = 1
    mask[4, 2:5] = 1
    score = np.full((5, 5), 0.5)  # normal pixels
    score[4, 2:5] = 0.0  # region B scores below every normal pixel
    score[0, 0] = 1.0
    assert metrics.aupro([mask], [score]) == pytest.approx(0.5)
    # pixel-pooled overlap would say 1/4: the metric must not
    perfect = mask.astype(float)
    assert metrics.aupro([mask], [perfect]) == pytest.approx(1.0)


def test_aupro_regions_are_8_connected():
    mask = np.zeros((4, 4), int)
    mask[0, 0] = mask[1, 1] = 1  # diagonal neighbours: one region
    assert metrics.image_regions([mask]).max() == 0


def test_point_regions_on_knn_graph():
    rng = np.random.default_rng(0)
    pts = rng.random((2000, 3))
    labels = ((np.linalg.norm(pts - 0.15, axis=1) < 0.12) | (np.linalg.norm(pts - 0.85, axis=1) < 0.12)).astype(int)
    region = metrics.point_regions([labels], [pts])
    assert region.max() == 1 and (region[labels == 0] == -1).all()
    score = np.where(labels == 1, 0.0, 0.5)  # the second defect scores below every normal point
    score[np.linalg.norm(pts - 0.15, axis=1) < 0.12] = 1.0  # only the first defect is found
    assert metrics.aupro([labels], [score], [pts]) == pytest.approx(0.5)


def test_evaluate_table_row():
    pts = np.random.default_rng(1).random((100, 3))
    lab = np.zeros(100, np.uint8)
    lab[:5] = 1
    scans = [Scan(points=pts, labels=np.zeros(100, np.uint8), label=0), Scan(points=pts, labels=lab, label=1)]
    good = AnomalyResult(point_scores=np.zeros(100), object_score=0.1)
    bad = AnomalyResult(point_scores=lab.astype(float), object_score=0.9)
    row = metrics.evaluate([good, bad], scans)
    assert row["object_auroc"] == 1.0 and row["point_auroc"] == 1.0 and row["ap"] == 1.0
    assert row["aupro"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="point scores for a scan"):
        metrics.evaluate([good, AnomalyResult(point_scores=np.zeros(3), object_score=1)], scans)
