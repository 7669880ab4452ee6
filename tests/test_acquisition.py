"""Realistic acquisition in ad3d synth: pose, noise, point counts and single views keep labels exact."""

import numpy as np
import pytest

from ad3d.errors import ConfigError
from ad3d.io import read_scan
from ad3d.synth import make_dataset, plant
from ad3d.synth.acquisition import Acquisition, add_noise, partial_view, perturb_pose


@pytest.fixture(scope="module")
def drill(shared_data):
    return read_scan(shared_data / "meshes" / "ycb" / "power_drill.obj", sample=6000, seed=3)


def rotation_degrees(rot: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))


def test_pose_perturbation_is_rigid_bounded_and_keeps_labels(drill):
    bad = plant(drill, "bulge", 1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        moved = perturb_pose(bad, 5.0, 0.01, rng)
        transform = np.array(moved.meta["pose"])
        assert rotation_degrees(transform[:3, :3]) <= 5.0 + 1e-9
        pick = np.random.default_rng(1).choice(len(bad), 200, replace=False)
        before = np.linalg.norm(bad.points[pick, None] - bad.points[None, pick], axis=2)
        after = np.linalg.norm(moved.points[pick, None] - moved.points[None, pick], axis=2)
        assert np.allclose(before, after, atol=1e-5 * np.ptp(bad.points))
        shift = np.linalg.norm(moved.points.mean(0) - bad.points.mean(0))
        assert shift <= 0.01 * np.linalg.norm(np.ptp(bad.points, axis=0)) + 1e-6
        assert np.array_equal(moved.labels, bad.labels)
        assert np.allclose(np.linalg.norm(moved.normals, axis=1), 1, atol=1e-5)


def test_noise_has_the_asked_sigma_and_keeps_labels(drill):
    bad = plant(drill, "dent", 2)
    noisy = add_noise(bad, 0.002, np.random.default_rng(0))
    diag = np.linalg.norm(np.ptp(bad.points, axis=0))
    sigma = np.std(noisy.points - bad.points) / diag
    assert 0.0018 < sigma < 0.0022
    assert np.array_equal(noisy.labels, bad.labels)


def test_partial_view_keeps_a_labelled_subset_that_shows_the_defect(drill):
    rng = np.random.default_rng(4)
    for seed in range(3):
        bad = plant(drill, "hole", seed)
        view = partial_view(bad, rng)
        assert 0.1 * len(bad) < len(view) < 0.9 * len(bad)
        index = {tuple(p): i for i, p in enumerate(bad.points.tolist())}
        source = np.array([index[tuple(p)] for p in view.points.tolist()])  # every kept point is an original
        assert np.array_equal(view.labels, bad.labels[source])
        assert view.labels.sum() >= 0.5 * bad.labels.sum()


def test_ideal_acquisition_gives_exact_counts_and_realistic_ones_vary(tmp_path, shared_data):
    src = [shared_data / "meshes" / "cad" / "round.stl"]
    make_dataset(
        src,
        "anomaly-shapenet",
        tmp_path / "ideal",
        points=800,
        train=2,
        good=2,
        per_defect=1,
        defects=("bulge",),
        acquisition=Acquisition.ideal(),
    )
    make_dataset(
        src, "anomaly-shapenet", tmp_path / "real", points=800, train=2, good=2, per_defect=1, defects=("bulge",)
    )
    from ad3d import datasets as ds

    ideal = list(ds.load("anomaly-shapenet", tmp_path / "ideal", "round0", "test"))
    real = list(ds.load("anomaly-shapenet", tmp_path / "real", "round0", "test"))
    assert {len(s) for s in ideal} == {800}
    assert all(640 <= len(s) <= 960 for s in real) and len({len(s) for s in real}) > 1
    good = [s for s in ideal if s.label == 0]
    from scipy.spatial import cKDTree

    # ideal scans lie on the mesh as it is: every point within float precision of the clean surface sampling
    surface = read_scan(src[0], sample=20000, seed=9).points
    spacing = np.median(cKDTree(surface).query(surface, k=2)[0][:, 1])
    off = lambda scan: np.median(cKDTree(surface).query(scan.points)[0]) / spacing  # noqa: E731
    moved = [s for s in real if s.label == 0]
    assert off(moved[0]) > 1.2 * off(good[0])  # posed and noisy: farther from the clean surface


@pytest.mark.parametrize("field,value", [("noise", -1.0), ("pose_degrees", float("nan")), ("density", 1.0)])
def test_bad_acquisition_settings_are_a_clear_error(field, value):
    with pytest.raises(ConfigError, match=field):
        Acquisition(**{field: value})
