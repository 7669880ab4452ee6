"""The deviation detector measures in scan units: a part against its own mesh deviates by the sensor noise, a
planted dent reads its depth, missing material is found, and a reference that cannot be trusted is named."""

import json

import numpy as np
import pytest
import trimesh

import ad3d
from ad3d.errors import ConfigError
from ad3d.synth.acquisition import Acquisition
from ad3d.synth.defects import plant
from ad3d.types import Scan

RADIUS = 20.0  # mm
NOISE = 0.02  # mm, per coordinate
DIAG = 2 * RADIUS * np.sqrt(3)


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    path = tmp_path_factory.mktemp("nominal") / "sphere.stl"
    trimesh.creation.icosphere(subdivisions=5, radius=RADIUS).export(path)
    return path


def scan_of(path, seed, points=12000, defect=None, height=None):
    """A scan of the mesh at `path`: area-weighted samples, a defect if asked, noise and a pose of up to 5°."""
    from ad3d.io import load_trimesh, sample_surface

    rng = np.random.default_rng(seed)
    pts, normals = sample_surface(load_trimesh(path), points, seed)
    scan = Scan(points=pts, normals=normals, units="mm")
    if defect:
        share = None if height is None else (height / DIAG, height / DIAG)
        scan = plant(scan, defect, rng, fraction=(0.02, 0.03), height=share)
    return Acquisition(noise=NOISE / DIAG).finish(scan, rng)


@pytest.fixture(scope="module")
def measuring(sphere):
    """The CAD mesh and a typed tolerance: no good scans at all."""
    return ad3d.create("deviation", reference=str(sphere), tolerance=0.1).fit([])


@pytest.fixture(scope="module")
def learned(sphere):
    """No mesh: the nominal surface fused from four good scans, the tolerance learned from them."""
    good = [scan_of(sphere, seed) for seed in range(5)]
    return ad3d.create("deviation").fit(good[:4]).calibrate_out_of_fold(good)


def test_a_sphere_against_its_own_mesh_deviates_by_the_noise(measuring, sphere):
    result = measuring.score(scan_of(sphere, 10))
    d = result.deviations.astype(np.float64)
    # the mean is off by the tangent-plane bias on a curve, about spacing² / 8R (0.002 mm here)
    assert abs(d.mean()) < 0.15 * NOISE and abs(d.std() - NOISE) < 0.15 * NOISE
    assert result.alignment["ok"] and result.decision == "accept" and result.regions == []


def test_a_half_millimetre_dent_reads_minus_half_a_millimetre(measuring, sphere):
    dented = scan_of(sphere, 11, points=30000, defect="dent", height=0.5)
    assert dented.meta["defect_height"] == pytest.approx(-0.5, rel=1e-3)
    result = measuring.score(dented)
    assert result.decision == "reject" and len(result.regions) == 1
    region = result.regions[0]
    assert abs(region.max_deviation - (-0.5)) < 2 * NOISE
    labelled = set(np.flatnonzero(dented.labels))
    assert len(labelled & set(region.indices.tolist())) > 0.8 * len(region.indices)


def test_a_bulge_reads_positive_and_good_parts_pass_on_a_learned_tolerance(learned, sphere):
    bulged = scan_of(sphere, 12, defect="bulge", height=0.4)
    result = learned.score(bulged)
    assert result.decision == "reject" and result.regions[0].max_deviation == pytest.approx(0.4, abs=0.1)
    assert learned.score(scan_of(sphere, 13)).decision != "reject"


def test_a_hole_is_found_as_missing_material(learned, sphere):
    from sklearn.metrics import roc_auc_score

    holed = scan_of(sphere, 14, defect="hole")
    result = learned.score(holed)
    assert result.decision == "reject" and roc_auc_score(holed.labels, result.point_scores) > 0.95
    inside = holed.labels[result.regions[0].indices]
    assert inside.sum() > 0.8 * holed.labels.sum() and inside.mean() > 0.3  # the rim, and the blurred score around it


def test_a_partial_view_is_not_missing_material(learned, sphere):
    from ad3d.synth.acquisition import visible_from

    half = scan_of(sphere, 15)
    seen = half.subset(visible_from(half.points, np.array([0.0, 0.0, 1.0])))
    assert learned.score(seen, force=True).object_score < learned.threshold_


def test_save_and_load_score_the_same(sphere, tmp_path):
    # without registration: a sphere registers to itself in any rotation, and RANSAC picks one per run
    model = ad3d.create("deviation", align=False).fit([scan_of(sphere, seed) for seed in range(3)])
    model.calibrate([scan_of(sphere, seed) for seed in range(3, 5)])
    scan = scan_of(sphere, 16, defect="dent")
    before = model.score(scan)
    model.save(tmp_path / "m.ad3d")
    after = ad3d.load(tmp_path / "m.ad3d").score(scan)
    assert np.array_equal(before.point_scores, after.point_scores)
    assert np.array_equal(before.deviations, after.deviations)
    assert before.regions[0].max_deviation == after.regions[0].max_deviation


def test_an_open_reference_is_warned_about_by_name(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    mesh.update_faces(np.arange(len(mesh.faces)) > 10)
    path = tmp_path / "open.stl"
    mesh.export(path)
    with pytest.warns(UserWarning, match=r"'.*open\.stl' is not watertight \(\d+ open edges\)"):
        ad3d.create("deviation", reference=str(path), tolerance=0.1).fit([])


def test_a_reference_in_other_units_is_refused_naming_them(sphere, tmp_path):
    metres = trimesh.load(sphere)
    metres.apply_scale(0.001)
    path = tmp_path / "sphere_m.stl"
    metres.export(path)
    with pytest.raises(ConfigError, match=r"sphere_m\.stl' is 0\.00\d*x .*millimetres against metres"):
        ad3d.create("deviation", reference=str(path)).fit([scan_of(sphere, 0)])


def test_an_inward_facing_mesh_is_turned_outward(sphere, tmp_path):
    inside_out = trimesh.load(sphere)
    inside_out.invert()
    path = tmp_path / "inverted.stl"
    inside_out.export(path)
    det = ad3d.create("deviation", reference=str(path), tolerance=0.1).fit([])
    bulged = scan_of(sphere, 17, points=30000, defect="bulge", height=0.5)
    assert det.score(bulged).regions[0].max_deviation > 0.4


def test_a_missing_or_faceless_reference_is_named(tmp_path):
    from ad3d.errors import ScanFormatError

    with pytest.raises(ScanFormatError, match=r"nowhere\.stl': no such file"):
        ad3d.create("deviation", reference=str(tmp_path / "nowhere.stl"), tolerance=0.1).fit([])
    trimesh.PointCloud(np.random.default_rng(0).random((100, 3))).export(tmp_path / "cloud.ply")
    with pytest.raises((ConfigError, ScanFormatError), match=r"cloud\.ply"):
        ad3d.create("deviation", reference=str(tmp_path / "cloud.ply"), tolerance=0.1).fit([])


def test_no_scans_need_a_reference_and_a_tolerance(sphere):
    with pytest.raises(ConfigError, match="at least one normal scan"):
        ad3d.create("deviation", reference=str(sphere)).fit([])
    with pytest.raises(ConfigError, match="at least one normal scan"):
        ad3d.create("deviation", tolerance=0.1).fit([])


def test_the_reference_is_found_by_category(sphere):
    scans = [scan_of(sphere, s).replace(category="sphere") for s in range(2)]
    template = str(sphere.parent / "{category}.stl")
    det = ad3d.create("deviation", reference=template).fit(scans)
    assert det.reference_path() == str(sphere)


def test_cli_fits_on_a_mesh_and_a_tolerance_alone_and_reports_the_deviation(sphere, tmp_path):
    from ad3d.cli import main
    from ad3d.io import read_scan, write_scan

    model = tmp_path / "m.ad3d"
    assert main(["fit", "--detector", "deviation", "--param", f"reference={sphere}", "--param", "tolerance=0.1",
                 "--out", str(model), "--quiet"]) == 0  # fmt: skip
    assert ad3d.load(model).thresholds()["reject"] == 1.0
    write_scan(tmp_path / "dented.ply", scan_of(sphere, 18, points=30000, defect="dent", height=0.5))
    assert main(["score", str(model), str(tmp_path / "dented.ply"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "dented.json").read_text())
    assert report["decision"] == "reject" and report["regions"][0]["max_deviation"] == pytest.approx(-0.5, abs=0.04)
    result = read_scan(tmp_path / "out" / "dented.ply")
    assert result.fields["deviation"].min() < -0.4


def test_the_viewer_shows_deviations_beside_scores(measuring, sphere, tmp_path):
    pytest.importorskip("pyvista")
    from ad3d.viewers import interactive_plotter, render

    scan = scan_of(sphere, 19, points=4000, defect="dent", height=0.5)
    result = measuring.score(scan)
    plotter, controls = interactive_plotter(
        scan, result.point_scores, threshold=1.0, deviations=result.deviations, off_screen=True
    )
    mapper = controls["actors"]["deviation"].mapper
    low, high = mapper.scalar_range
    assert low == -high and high == pytest.approx(np.abs(result.deviations).max())  # symmetric around 0
    controls["pick"](scan.points[7] + 1e-9)
    assert f"deviation {result.deviations[7]:+.4g} mm" in controls["last_pick"]
    plotter.close()
    render(scan, result.point_scores, deviations=result.deviations, screenshot=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 10_000
