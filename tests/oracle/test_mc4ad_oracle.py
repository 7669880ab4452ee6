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
