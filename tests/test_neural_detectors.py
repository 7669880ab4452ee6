"""R3D-AD and MC4AD: losses by hand, pseudo-defect wiring, determinism, save/load, and learning."""

import json

import numpy as np
import pytest
import torch

import ad3d
from ad3d.errors import ConfigError
from ad3d.nn.cfp import CFPNet, corrective_force_loss, voxel_representatives
from ad3d.synth import plant
from ad3d.types import Scan

TINY = {
    "r3dad": {
        "num_points": 256,
        "latent": 16,
        "encoder_widths": (16, 32),
        "denoiser_widths": (32, 32),
        "iterations": 6,
        "batch_size": 4,
        "eval_every": 3,
        "sample_steps": 4,
        "device": "cpu",
        "rotation": "none",
        "noise_aug": 0.0,
        "align": False,
    },
    "mc4ad": {
        "encoder": (8, 16, 16),
        "decoder": (16, 8),
        "num_points": 512,
        "iterations": 6,
        "batch_size": 2,
        "eval_every": 3,
        "device": "cpu",
        "rotation": "none",
        "noise_aug": 0.0,
        "align": False,
    },
}  # align=False: a box fits several poses, and Open3D's threaded RANSAC may pick another on a rerun


def box_scan(n=1024, seed=0):
    """A sampled box surface (0.8 x 0.6 x 0.4) with normals: a stand-in part."""
    import trimesh

    mesh = trimesh.creation.box((0.8, 0.6, 0.4))
    pts, faces = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return Scan(
        points=np.asarray(pts, np.float32), normals=np.asarray(mesh.face_normals[faces], np.float32), category="box"
    )


@pytest.fixture(scope="module")
def scans():
    return [box_scan(seed=s) for s in range(4)]


@pytest.mark.parametrize("name", ["r3dad", "mc4ad"])
def test_fit_is_deterministic_with_a_seed(name, scans):
    a = ad3d.create(name, **TINY[name], seed=3).fit(scans)
    b = ad3d.create(name, **TINY[name], seed=3).fit(scans)
    c = ad3d.create(name, **TINY[name], seed=4).fit(scans)
    sa, sb, sc = a._export_state(), b._export_state(), c._export_state()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)
    test = box_scan(seed=11)
    assert np.array_equal(a.score(test).point_scores, b.score(test).point_scores)


@pytest.mark.parametrize("name", ["r3dad", "mc4ad"])
def test_save_load_round_trip(name, scans, tmp_path):
    det = ad3d.create(name, **TINY[name]).fit(scans).calibrate(scans[-1:])
    det.save(tmp_path / "m.safetensors")
    back = ad3d.load(tmp_path / "m.safetensors")
    test = box_scan(seed=12)
    before, after = det.score(test), back.score(test)
    assert np.array_equal(before.point_scores, after.point_scores) and before.decision == after.decision
    assert back.n_learned() == det.n_learned() > 0
    as_json = lambda params: json.loads(json.dumps(params))  # noqa: E731  (tuples come back as lists)
    assert as_json(back.get_params()) == as_json(det.get_params())


@pytest.mark.parametrize("name", ["r3dad", "mc4ad"])
def test_scores_every_input_point_in_scan_units(name, scans):
    params = TINY[name]
    det = ad3d.create(name, **params).fit(scans)
    big = box_scan(3000, seed=5)
    result = det.score(big)
    assert result.point_scores.shape == (3000,) and np.isfinite(result.point_scores).all()
    # the same parts in millimetres instead of metres: the same model in its frame, scores x 1000
    mm = ad3d.create(name, **params).fit([s.replace(points=s.points * 1000) for s in scans])
    in_mm = mm.score(big.replace(points=big.points * 1000))
    assert np.allclose(in_mm.point_scores, 1000 * result.point_scores, rtol=1e-2, atol=1e-3)


def test_bad_settings_are_clear_errors(scans):
    with pytest.raises(ConfigError, match="objective"):
        ad3d.create("r3dad", **{**TINY["r3dad"], "objective": "x"}).fit(scans)
    with pytest.raises(ConfigError, match="iterations must be at least 1"):
        ad3d.create("mc4ad", **{**TINY["mc4ad"], "iterations": 0}).fit(scans)
    with pytest.raises(ConfigError, match="generator"):
        ad3d.create("mc4ad", **{**TINY["mc4ad"], "generator": "x"}).fit(scans)
    with pytest.raises(ConfigError, match="missing is a probability"):
        ad3d.create("mc4ad", **{**TINY["mc4ad"], "missing": 1.5}).fit(scans)
    with pytest.raises(ConfigError, match="no CUDA"):
        if torch.cuda.is_available():
            raise ConfigError("no CUDA")  # this check is about machines without a GPU
        ad3d.create("mc4ad", **{**TINY["mc4ad"], "device": "cuda"}).fit(scans)


# --- R3D-AD ------------------------------------------------------------------------------------
def test_r3dad_training_pairs_are_patch_gen_copies_of_the_clean_cloud(scans):
    det = ad3d.create("r3dad", **TINY["r3dad"])
    clean, defective = det.training_pair(scans[0], np.random.default_rng(0))
    moved = np.linalg.norm(defective - clean, axis=1) > 0
    assert clean.shape == (256, 3) and moved.sum() == 16  # 1/16 of the points, the rest untouched
    assert np.linalg.norm(defective - clean, axis=1).max() <= 0.05 + 1e-6
    off = ad3d.create("r3dad", **{**TINY["r3dad"], "patch_gen": False}).training_pair(
        scans[0], np.random.default_rng(0)
    )
    assert np.array_equal(off[0], off[1])


@pytest.mark.parametrize("objective", ["noise", "clean"])
def test_r3dad_loss_targets(objective, scans, monkeypatch):
    """A network that returns the noise mapping the clean cloud to x_t scores zero on both objectives;
    one that returns the drawn noise is right only for the noise objective (clean objective: x_t is
    made from the defective cloud, so the clean shape must be recovered)."""
    det = ad3d.create("r3dad", **{**TINY["r3dad"], "objective": objective}).fit(scans)
    clean, defective = (torch.from_numpy(a)[None] for a in det.training_pair(scans[0], np.random.default_rng(1)))
    t = torch.tensor([37])
    eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    a, s = det.schedule.coefficients(t)
    monkeypatch.setattr(det, "_denoise", lambda x_t, t, z: (x_t - a * clean) / s)
    assert float(det.loss(clean, defective, t, eps)) == pytest.approx(0.0, abs=1e-9)
    monkeypatch.setattr(det, "_denoise", lambda x_t, t, z: eps)
    expected = 0.0 if objective == "noise" else float((((a * (defective - clean)) / s) ** 2).mean())
    assert float(det.loss(clean, defective, t, eps)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert objective == "noise" or expected > 0


# --- MC4AD -------------------------------------------------------------------------------------
def test_voxel_representatives_are_each_voxels_first_point_and_every_point_maps_to_its_own():
    points = torch.tensor([[0.01, 0.01, 0.0], [0.5, 0.5, 0.5], [0.02, 0.0, 0.01], [0.51, 0.52, 0.5], [0.9, 0, 0]])
    kept, voxel_of = voxel_representatives(points, 0.1)
    assert torch.equal(kept, points[[0, 1, 4]])  # first point of each voxel, in input order
    assert voxel_of.tolist() == [0, 1, 0, 1, 2]


def test_voxel_shared_predictions_give_points_of_one_voxel_one_force():
    torch.manual_seed(0)
    cloud = torch.rand(1, 600, 3) * 2 - 1
    net = CFPNet("point-unet", (8, 16, 16, 16, 16), (16, 16, 16, 16), k=8, voxel=0.25).eval()
    with torch.no_grad():
        f_in, _ = net(cloud)
    _, voxel_of = voxel_representatives(cloud[0], 0.25)
    same = voxel_of[:, None] == voxel_of[None]
    assert same.sum() > 600  # some voxels hold several points
    gaps = (f_in[0][:, None] - f_in[0][None]).abs().amax(-1)
    assert gaps[same].max() == 0 and gaps[~same].max() > 0
    per_point = CFPNet("point-unet", (8, 16, 16, 16, 16), (16, 16, 16, 16), k=8).eval()
    with torch.no_grad():
        own, _ = per_point(cloud)
    assert (own[0][:, None] - own[0][None]).abs().amax(-1)[same].max() > 0  # per point: each its own


def test_corrective_force_loss_by_hand():
    f_in = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    f_ex = torch.tensor([[1.0, 0, 0], [0, -1, 0]])
    target = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    out = corrective_force_loss(f_in, f_ex, target, sym_weight=0.1)
    # joint = [[1,0,0],[0,0,0]]: L1 0; cosine 1 and 0 (zero target) -> overall -0.5
    # symmetric: L1 ratio 0 and 2/2 -> 0.5; cosine 1 and -1 -> 0; total -0.5 + 0.1 * 0.5
    assert float(out["overall"]) == pytest.approx(-0.5, abs=1e-6)
    assert float(out["symmetric"]) == pytest.approx(0.5, abs=1e-6)
    assert float(out["total"]) == pytest.approx(-0.45, abs=1e-6)
    out = corrective_force_loss(torch.tensor([[2.0, 0, 0]]), torch.zeros(1, 3), torch.tensor([[0.0, 1, 0]]), 0.1)
    # joint [1,0,0] vs [0,1,0]: L1 2, cosine 0; symmetric 2/2 = 1, cosine with a zero force 0
    assert float(out["overall"]) == pytest.approx(2.0, abs=1e-6)
    assert float(out["total"]) == pytest.approx(2.1, abs=1e-6)


def test_mc4ad_training_targets_point_back_to_the_clean_scan(scans):
    det = ad3d.create("mc4ad", **{**TINY["mc4ad"], "missing": 0.0}).fit(scans)
    prepared = det._prepare(scans[:1])[0]
    rng = np.random.default_rng(0)
    moved, back, mask = det.training_sample(prepared, rng)
    assert moved.shape == (512, 3) and mask.any() and not mask.all()
    assert np.all(back[~mask] == 0)
    restored = moved + back
    # every restored point lies on the clean scan
    d = np.linalg.norm(restored[:, None] - prepared.points[None], axis=2).min(1)
    assert d.max() < 1e-5
    assert det.object_reduce_ in ("mean", "top") and set(det.reduce_auroc_) == {"mean", "top"}


def test_mc4ad_paper_preset_switches_the_cpu_departures_back_to_the_release():
    cpu, paper = ad3d.create("mc4ad"), ad3d.create("mc4ad", **ad3d.detectors.preset("mc4ad", "paper"))
    assert (cpu.missing, cpu.sym_weight, cpu.smooth_k) == (1.0, 0.0, 64)
    assert (paper.missing, paper.sym_weight, paper.smooth_k, paper.patches) == (0.0, 0.1, 1, 1)


def test_mc4ad_missing_material_samples_keep_their_size_and_mark_the_rim(scans):
    det = ad3d.create("mc4ad", **{**TINY["mc4ad"], "missing": 1.0, "patches": 0})
    det._fit_frame(scans)
    prepared = det._prepare(scans[:1])[0]
    moved, back, mask = det.training_sample(prepared, np.random.default_rng(1))
    assert moved.shape == (512, 3) and mask.any() and np.all(back[~mask] == 0) and np.abs(back[mask]).max() > 0
    # relocated points fill in elsewhere: the sample is no longer a subset of the clean scan
    d = np.linalg.norm(moved[:, None] - prepared.points[None], axis=2).min(1)
    assert d.max() > 1e-4 and np.all(d[mask] < 1e-5)


def test_training_augmentation_matches_acquisition_pose_and_noise(scans):
    """rotation='jitter' turns a sample by at most JITTER_DEGREES; noise_aug adds noise to the input
    only (the correction target stays the pseudo-defect's)."""
    from ad3d.detectors.neural import JITTER_DEGREES, random_rotation

    rng = np.random.default_rng(0)
    angles = [
        np.degrees(np.arccos(np.clip((np.trace(random_rotation(rng, "jitter")) - 1) / 2, -1, 1))) for _ in range(200)
    ]
    assert max(angles) <= JITTER_DEGREES + 1e-9 and max(angles) > 0.5 * JITTER_DEGREES
    plain = ad3d.create("mc4ad", **{**TINY["mc4ad"], "missing": 0.0})
    noisy = ad3d.create("mc4ad", **{**TINY["mc4ad"], "missing": 0.0, "noise_aug": 0.01})
    plain._fit_frame(scans)
    noisy._fit_frame(scans)
    prepared = plain._prepare(scans[:1])[0]
    a, back_a, mask_a = plain.training_sample(prepared, np.random.default_rng(3))
    b, back_b, mask_b = noisy.training_sample(prepared, np.random.default_rng(3))
    assert np.array_equal(back_a, back_b) and np.array_equal(mask_a, mask_b)
    assert 0 < np.abs(b - a).max() < 0.06 and np.std(b - a) < 0.01


def test_location_baseline_learns_where_normal_scans_score_high():
    from ad3d.detectors.scoring import baseline_at, location_baseline

    rng = np.random.default_rng(0)
    reference = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    clouds = []
    for _ in range(3):
        pts = rng.uniform(-1, 1, (2000, 3)).astype(np.float32)
        clouds.append((pts, (pts[:, 0] > 0.5) * 1.0 + rng.normal(0, 0.05, 2000)))  # one side always scores 1
    base = location_baseline(reference, clouds)
    assert base.shape == (500,)
    assert np.median(base[reference[:, 0] > 0.7]) > 0.9 and np.median(base[reference[:, 0] < 0.3]) < 0.1
    probe = np.array([[0.9, 0, 0], [-0.9, 0, 0]], np.float32)
    high, low = baseline_at(reference, base, probe)
    assert high > 0.8 and low < 0.2


def test_mc4ad_keeps_its_location_baseline_in_the_model_file(scans, tmp_path):
    det = ad3d.create("mc4ad", **{**TINY["mc4ad"], "align": True}).fit(scans)
    assert det.reference_ is not None and det.baseline_.shape == (len(det.reference_),)
    det.save(tmp_path / "m.ad3d")
    back = ad3d.load(tmp_path / "m.ad3d")
    assert np.array_equal(back.baseline_, det.baseline_) and np.array_equal(back.reference_, det.reference_)
    scan = box_scan(seed=40)
    with_baseline = det.score(scan).point_scores
    det.location_norm = False
    without = det.score(scan).point_scores
    assert np.abs(with_baseline - without).mean() > 0.1 * np.abs(without).mean()  # the baseline is subtracted


def test_mc4ad_scores_at_its_training_density_whatever_the_scan_size(scans):
    """A scan four times denser than num_points is scored on an even subset and every point gets a score."""
    det = ad3d.create("mc4ad", **{**TINY["mc4ad"], "smooth_k": 8}).fit(scans)
    dense, sparse = box_scan(n=2048, seed=30), box_scan(n=512, seed=30)
    d, s = det.score(dense), det.score(sparse)
    assert len(d.point_scores) == 2048 and np.isfinite(d.point_scores).all()
    assert d.object_score == pytest.approx(s.object_score, rel=0.5)  # same part, same scale of score


@pytest.mark.slow
def test_r3dad_overfits_one_shape_and_flags_a_planted_bulge(scans):
    """A small model trained on one part for a few hundred steps scores a bulge above the rest."""
    from ad3d.metrics import auroc

    det = ad3d.create(
        "r3dad",
        num_points=256,
        latent=32,
        encoder_widths=(32, 64),
        denoiser_widths=(64, 64, 64),
        iterations=400,
        batch_size=8,
        eval_every=100,
        patience=10,
        device="cpu",
        seed=0,
    ).fit(scans)
    normal = box_scan(seed=20)
    bulged = plant(normal, "bulge", seed=4, fraction=(0.06, 0.06))
    scores = det.score(bulged).point_scores
    assert auroc(bulged.labels, scores) > 0.85
    assert det.score(bulged).object_score > det.score(normal).object_score


def test_a_single_view_is_not_a_complete_scan_for_the_reference_coverage(scans):
    from ad3d.detectors.r3dad import covers
    from ad3d.synth.acquisition import partial_view

    whole = torch.from_numpy(scans[0].points)
    view = partial_view(scans[1], np.random.default_rng(0))
    assert covers(torch.from_numpy(scans[1].points), whole)
    assert not covers(torch.from_numpy(view.points), whole)
