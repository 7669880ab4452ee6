"""LSFA's loss pieces against its release (yuanpengtu/LSFA @ a8dd6d7, Adaptation/fusion_pretrain.py)."""

import pytest
import torch

from ad3d.detectors.lsfa import compactness, info_nce


def test_release_infonce_is_twice_ours_and_matches_contrastive_loss(fixture):
    f = fixture("lsfa_losses")
    q, k = torch.from_numpy(f["q"]), torch.from_numpy(f["k"])
    assert float(info_nce(q, k, 1.0, release=True)) == pytest.approx(float(f["contrast"]), rel=1e-5)
    assert float(info_nce(q, k, 1.0)) == pytest.approx(float(f["contrast"]) / 2, rel=1e-5)  # ad3d's: half


def test_release_compactness_clamps_squared_distances_at_50(fixture):
    f = fixture("lsfa_losses")
    features = torch.from_numpy(f["features"]).requires_grad_()
    queue = torch.from_numpy(f["queue"])
    clamped = compactness(features, queue, clamp=50.0)
    assert float(clamped.detach()) == pytest.approx(float(f["compactness"]), rel=1e-4)
    nearest = torch.cdist(features, queue).min(1).values
    assert (nearest > 50**0.5).any() and float(compactness(features, queue).detach()) > float(clamped)  # the clamp binds
    clamped.backward()
    far = nearest > 50**0.5
    assert torch.all(features.grad[far] == 0) and features.grad[~far].abs().sum() > 0  # no gradient beyond it
