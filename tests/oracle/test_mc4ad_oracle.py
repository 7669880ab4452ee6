"""MC4AD's scores against its release's `eval_fn` (hzzzzzhappy/MC4AD @ 27cf768, code.zip: network/MC4AD.py)."""

import numpy as np
import pytest

import ad3d
from ad3d.detectors.registry import preset


def test_paper_preset_scores_the_l1_norm_of_the_joint_force_and_means_it(fixture):
    f = fixture("mc4ad_object_score")
    paper = ad3d.create("mc4ad", **preset("mc4ad", "paper"))
    scores = paper.force_scores(f["forces"][:, :3], f["forces"][:, 3:])
    np.testing.assert_allclose(scores, np.abs(f["joint"]).sum(1), rtol=1e-6)  # eval.py: |joint offset|_1
    assert paper._reduce(scores, "mean") == pytest.approx(float(f["object"]), rel=1e-6)
    lengths = ad3d.create("mc4ad").force_scores(f["forces"][:, :3], f["forces"][:, 3:])  # ad3d's default: L2
    np.testing.assert_allclose(lengths, np.linalg.norm(f["joint"], axis=1), rtol=1e-6)


def test_training_loss_matches_model_fn(fixture):
    """Already equal before (issue 23): kept so. code/network/MC4AD.py model_fn, symmetric weight 0.1."""
    import torch

    from ad3d.nn.cfp import corrective_force_loss

    f = fixture("mc4ad_loss")
    forces = torch.from_numpy(f["forces"])
    loss = corrective_force_loss(forces[:, :3], forces[:, 3:], torch.from_numpy(f["target"]), sym_weight=0.1)
    assert float(loss["total"]) == pytest.approx(float(f["loss"]), rel=1e-5)
