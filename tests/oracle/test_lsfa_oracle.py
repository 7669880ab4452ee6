"""LSFA's loss pieces against its release (yuanpengtu/LSFA @ a8dd6d7, Adaptation/fusion_pretrain.py)."""

import numpy as np
import pytest
import torch

from ad3d.detectors.decision_layer import fit_release_fuser, release_map, release_pairs, release_statistics
from ad3d.detectors.memory_bank import nearest_distances, reweighted_max
from ad3d.nn.adaptor import compactness, info_nce


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
    unclamped = float(compactness(features, queue).detach())
    assert (nearest > 50**0.5).any() and unclamped > float(clamped)  # the clamp binds
    clamped.backward()
    far = nearest > 50**0.5
    assert torch.all(features.grad[far] == 0) and features.grad[~far].abs().sum() > 0  # no gradient beyond it


def release_scored(f, name: str, stats: dict, banks: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per scan of fixture set `name`: (s_xyz, 0.1 s_rgb) object pairs and the (224 * 224, 2) map pairs."""
    objects, maps = [], []
    for xyz, rgb in zip(f[f"{name}_xyz"], f[f"{name}_rgb"]):
        scores, patch_maps = {}, {}
        for m, feats in (("xyz", xyz), ("rgb", rgb)):
            standard = ((feats - stats[m][0]) / stats[m][1]).astype(np.float32)
            scores[m] = reweighted_max(standard, banks[m])
            patch_maps[m] = release_map(nearest_distances(standard, banks[m]).reshape(7, 7), blur=4)
        objects.append(release_pairs(scores["xyz"], scores["rgb"])[0])
        maps.append(release_pairs(patch_maps["xyz"], patch_maps["rgb"]))
    return np.stack(objects), np.stack(maps)


def test_release_decision_layer_matches_features_double_lib(fixture):
    f = fixture("lsfa_scoring")
    bank_features = {"xyz": f["train_xyz"].reshape(-1, 10), "rgb": f["train_rgb"].reshape(-1, 14)}
    stats = release_statistics(bank_features)
    # the release's mix-up: both means from the xyz bank, both stds from the RGB bank
    assert np.allclose([*stats["xyz"], *stats["rgb"]], f["statistics"], rtol=1e-5)
    banks = {m: ((v - stats[m][0]) / stats[m][1]).astype(np.float32) for m, v in bank_features.items()}
    normal_objects, normal_maps = release_scored(f, "normal", stats, banks)
    assert np.allclose(normal_objects, f["normal_pairs"], rtol=1e-4)
    object_weights = fit_release_fuser(normal_objects)
    map_weights = fit_release_fuser(normal_maps.reshape(-1, 2))
    assert np.allclose(object_weights, f["object_weights"], rtol=1e-3)
    assert np.allclose(map_weights, f["map_weights"], rtol=1e-3)
    test_objects, test_maps = release_scored(f, "test", stats, banks)
    assert np.allclose(test_objects @ object_weights, f["object_scores"], rtol=1e-3)
    fused = (test_maps @ map_weights).reshape(f["maps"].shape)
    level = f["maps"].max() / 255  # each modality's map is cut to 8 bits before its blur
    assert np.abs(fused - f["maps"]).max() <= 2 * level
    assert f["object_scores"][1] > 2 * max(f["object_scores"][0], f["object_scores"][2])  # the odd scan
