"""The detector protocol, the FPFH PatchCore baseline, calibration, regions and the model file."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ad3d
from ad3d import datasets as ds
from ad3d.detectors import Detector, extract_regions
from ad3d.errors import ConfigError, ModelFormatError
from ad3d.metrics import evaluate
from ad3d.synth import make_dataset
from ad3d.types import Scan


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("synth") / "asn"
    sources = [
        shared_data / "meshes" / "cad" / "idler_riser.STL",
        shared_data / "meshes" / "ycb" / "mustard_bottle.obj",
    ]
    make_dataset(sources, "anomaly-shapenet", root, points=3000, train=3, good=4, per_defect=2, seed=1)
    return root


@pytest.fixture(scope="module")
def fitted(synth_root):
    det = ad3d.create("patchcore", num_groups=1024)
    return det.fit(ds.load("anomaly-shapenet", synth_root, "idler_riser0", "train"))


def test_patchcore_finds_planted_defects(synth_root):
    point, obj = [], []
    for cat in ds.categories("anomaly-shapenet", synth_root):
        det = ad3d.create("patchcore", num_groups=1024).fit(ds.load("anomaly-shapenet", synth_root, cat, "train"))
        test = list(ds.load("anomaly-shapenet", synth_root, cat, "test"))
        row = evaluate(det.score_many(test), test)
        point.append(row["point_auroc"])
        obj.append(row["object_auroc"])
    assert np.mean(point) > 0.65 and np.mean(obj) > 0.6, (point, obj)


def test_scores_cover_every_input_point(fitted, synth_root):
    scan = ds.load("anomaly-shapenet", synth_root, "idler_riser0", "test")[0]
    result = fitted.score(scan)
    assert result.point_scores.shape == (len(scan),) and np.isfinite(result.point_scores).all()
    assert result.decision is None  # not calibrated yet


def test_params_and_registry():
    det = ad3d.create("patchcore", radius_fraction=0.2)
    assert det.get_params()["radius_fraction"] == 0.2 and "patchcore" in ad3d.available()
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        ad3d.create("nope")
    with pytest.raises(ConfigError, match="not fitted"):
        det.score(Scan(points=np.random.rand(100, 3)))


def test_unknown_parameters_name_the_valid_ones_and_params_round_trip():
    with pytest.raises(ConfigError, match=r"patchcore has no parameter 'radius'; its parameters: .*radius_fraction"):
        ad3d.create("patchcore", radius=0.1)
    det = ad3d.create("patchcore", num_groups=256)
    assert det.set_params(top_fraction=0.1) is det and det.top_fraction == 0.1
    with pytest.raises(ConfigError, match="has no parameter 'colour'"):
        det.set_params(colour=1)
    twin = det.clone()
    assert twin is not det and twin.get_params() == det.get_params() and not twin._fitted()


def test_listing_detectors_imports_no_torch():
    code = "import sys, ad3d; print(ad3d.available()); assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "['deviation', 'lsfa', 'mc4ad', 'musc', 'patchcore', 'r3dad', 'simple3d']" in done.stdout


def test_saved_model_scores_bit_identically_in_fresh_processes(fitted, synth_root, tmp_path):
    model = tmp_path / "m.ad3d"
    fitted.save(model)
    scan = ds.load("anomaly-shapenet", synth_root, "idler_riser0", "test")[4]
    expected = fitted.score(scan).point_scores
    code = (
        "import sys, numpy as np, ad3d; from ad3d.io import read_scan; "
        "d = ad3d.load(sys.argv[1]); np.save(sys.argv[3], d.score(read_scan(sys.argv[2])).point_scores)"
    )
    import os

    for run, threads in enumerate(("1", "2", "3", "4", "8")):  # other thread splits must not change a bit
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        out = tmp_path / f"s{run}.npy"
        subprocess.run([sys.executable, "-c", code, str(model), scan.path, str(out)], check=True, env=env)
        assert np.array_equal(np.load(out), expected), f"run {run} with {threads} threads"


def test_loading_never_unpickles(fitted, tmp_path, monkeypatch):
    fitted.save(tmp_path / "m.ad3d")

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert np.array_equal(ad3d.load(tmp_path / "m.ad3d").bank_, fitted.bank_)


def test_damaged_model_files_fail_clearly(fitted, tmp_path):
    fitted.save(tmp_path / "m.ad3d")
    raw = (tmp_path / "m.ad3d").read_bytes()
    (tmp_path / "truncated.ad3d").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[-100] ^= 0x40  # inside the tensor data
    (tmp_path / "tampered.ad3d").write_bytes(bytes(flipped))
    (tmp_path / "other.ad3d").write_bytes(b"\x80\x04K\x01.")  # a pickle
    for name, pattern in (
        ("truncated", "damaged"),
        ("tampered", "checksum"),
        ("other", "damaged"),
        ("missing", "no such file"),
    ):
        with pytest.raises(ModelFormatError, match=pattern):
            ad3d.load(tmp_path / f"{name}.ad3d")


def test_a_huge_file_that_is_no_model_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    import safetensors.numpy

    def never(*a, **k):
        raise AssertionError("the arrays of a file that is no model were read")

    monkeypatch.setattr(safetensors.numpy, "load_file", never)
    big = tmp_path / "big.ad3d"
    with big.open("wb") as f:  # sparse: 2 GB on paper, nothing on disk
        f.write(b"\xff" * 8)
        f.truncate(2 * 2**30)
    with pytest.raises(ModelFormatError, match="no safetensors header"):
        ad3d.load(big)


def rewrite_header(src, dst, edit, *, recompute=False, tensors_edit=None):
    """Write a copy of a model file with its JSON header (and optionally arrays) edited; recompute=True
    also recomputes the checksum, as a careful forger would."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from ad3d.detectors.model_file import _digest

    with safe_open(str(src), framework="np") as f:
        header = json.loads(f.metadata()["ad3d"])
    tensors = load_file(str(src))
    edit(header)
    if tensors_edit:
        tensors_edit(tensors)
    if recompute:
        header["sha256"] = _digest(tensors, header)
    save_file(tensors, str(dst), metadata={"ad3d": json.dumps(header)})


def test_the_checksum_covers_the_header_and_the_header_is_validated(synth_root, tmp_path):
    train = ds.load("anomaly-shapenet", synth_root, "idler_riser0", "train")
    fitted = ad3d.create("patchcore", num_groups=512).fit(train).calibrate(train)
    fitted.save(tmp_path / "m.ad3d")
    src = tmp_path / "m.ad3d"

    def case(name, edit, pattern, **kw):
        rewrite_header(src, tmp_path / f"{name}.ad3d", edit, **kw)
        with pytest.raises(ModelFormatError, match=pattern):
            ad3d.load(tmp_path / f"{name}.ad3d")

    case("threshold", lambda h: h["thresholds"].update(reject=1e30), "checksum")
    case("diag", lambda h: h.update(train_diag=h["train_diag"] * 1.0000001), "checksum")
    case("noparams", lambda h: h.pop("params"), "'params' is missing", recompute=True)
    case("order", lambda h: h["thresholds"].update(review=h["thresholds"]["reject"] + 1), "lies above", recompute=True)
    case("nanthreshold", lambda h: h["thresholds"].update(point=float("nan")), "not a finite number", recompute=True)
    case("badparam", lambda h: h["params"].update(coreset_ratio=7.0), "coreset_ratio", recompute=True)
    case("unknownparam", lambda h: h["params"].update(colour=1), "parameters do not fit", recompute=True)
    case(
        "nanbank",
        lambda h: None,
        "'bank_' holds NaN",
        recompute=True,
        tensors_edit=lambda t: t["bank_"].__setitem__((0, 0), np.nan),
    )
    assert ad3d.load(src).thresholds() == fitted.thresholds()  # the untouched file still loads


class FieldScore(Detector):
    """A stand-in detector whose scores are read from the scan: to test the shared machinery exactly."""

    name = "field-score"
    _state_arrays = ("dummy_",)

    def __init__(self):
        self.dummy_ = None

    def _fit(self, scans, progress):
        self.dummy_ = np.zeros(1)

    def _score(self, scan):
        s = scan.fields["s"].astype(np.float32)
        return s, float(s.max())


def _scan(peak):
    s = np.zeros(200, np.float32)
    s[0] = peak
    return Scan(points=np.random.default_rng(0).random((200, 3)), fields={"s": s})


def test_calibrate_gives_a_three_way_decision():
    det = FieldScore().fit([_scan(0)])
    normals = [_scan(v) for v in np.linspace(0, 1, 101)]  # object scores 0.00 .. 1.00
    det.calibrate(normals, fpr=0.01, review_fpr=0.1)
    assert det.threshold_ == pytest.approx(0.99) and det.review_threshold_ == pytest.approx(0.9)
    assert [det.score(_scan(v)).decision for v in (0.5, 0.95, 2.0)] == ["accept", "review", "reject"]
    with pytest.raises(ConfigError, match="fpr must lie in"):
        det.calibrate(normals, fpr=1.5)


def test_calibrate_splits_points_into_normal_uncertain_defective():
    det = FieldScore().fit([_scan(0)])
    normals = [
        Scan(points=np.random.default_rng(i).random((100, 3)), fields={"s": np.arange(100, dtype=np.float32) / 100})
        for i in range(3)
    ]  # point scores 0.00 .. 0.99, three times over
    det.calibrate(normals, point_fpr=0.01, point_review_fpr=0.05)
    assert det.point_threshold_ == pytest.approx(0.99) and det.point_review_threshold_ == pytest.approx(0.95)
    values = np.array([0.1, 0.96, 0.99, 3.0] + [0.1] * 6, np.float32)  # a scan holds at least 10 points
    scan = Scan(points=np.random.default_rng(9).random((10, 3)), fields={"s": values})
    result = det.score(scan)
    assert result.point_decisions.tolist() == [0, 1, 2, 2] + [0] * 6
    from ad3d.report import result_json, summary_line

    assert result_json(scan, result, det.name)["points_by_decision"] == {"normal": 7, "uncertain": 1, "defective": 2}
    assert "2 defective / 1 uncertain" in summary_line("x", result)
    det.calibrate(normals, point_fpr=0.01, point_review_fpr=None)  # two-way: nothing is uncertain
    assert det.point_review_threshold_ is None and det.score(scan).point_decisions.tolist() == [0, 0, 2, 2] + [0] * 6


def test_regions_are_connected_groups_in_scan_units():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(40), np.arange(40), [0]), -1).reshape(-1, 3) * 0.5  # 0.5 mm spacing
    scores = np.zeros(len(grid))
    a = np.linalg.norm(grid - [5, 5, 0], axis=1) < 2
    b = np.linalg.norm(grid - [15, 15, 0], axis=1) < 3
    scores[a], scores[b] = 1.0, 2.0 + rng.random(b.sum())
    regions = extract_regions(grid, scores, 0.5)
    assert len(regions) == 2
    big, small = regions
    assert np.allclose(big.centroid, [15, 15, 0], atol=0.1) and big.max_score == scores[b].max()
    assert np.allclose(small.centroid, [5, 5, 0], atol=0.1)
    assert big.area == pytest.approx(b.sum() * 0.25)


def test_regions_merge_patches_of_one_defect_and_drop_specks():
    grid = np.stack(np.meshgrid(np.arange(40), np.arange(40), [0]), -1).reshape(-1, 3) * 0.5  # 1600 points
    scores = np.zeros(len(grid))
    left = np.linalg.norm(grid - [5, 5, 0], axis=1) < 1.6  # one defect scored in two patches, 2 mm apart
    right = np.linalg.norm(grid - [10, 5, 0], axis=1) < 1.6
    speck = np.flatnonzero(np.linalg.norm(grid - [15, 15, 0], axis=1) < 0.6)  # 5 points
    scores[left | right] = 1.0
    scores[speck[:3]] = 1.0  # 3 points: under 0.25 % of 1600
    assert len(extract_regions(grid, scores, 0.5, merge=0.0, join=0.0)) == 2  # the patches alone; no speck
    (merged,) = extract_regions(grid, scores, 0.5, merge=0.1, join=0.0)  # 10 % of the 27.6 mm diagonal joins them
    assert len(merged.indices) == (left | right).sum()
    (joined,) = extract_regions(grid, scores, 0.5, merge=0.0)  # 1.8 mm apart, each 4.5 mm across: one defect
    assert len(joined.indices) == (left | right).sum()
    scores[speck] = 1.0
    assert len(extract_regions(grid, scores, 0.5, merge=0.0, join=0.0)) == 3  # 5 points: kept
    assert len(extract_regions(grid, scores, 0.5, merge=0.0)) == 2  # the speck is 10 mm away: its own region


def test_a_scan_with_one_planted_defect_gives_one_region(shared_data, tmp_path):
    from ad3d.pipeline import fit_category
    from ad3d.synth import make_dataset

    make_dataset([shared_data / "meshes" / "cad" / "idler_riser.STL"], "anomaly-shapenet", tmp_path, points=4000,
                 train=4, good=2, per_defect=1, defects=("bulge",), seed=1)  # fmt: skip
    det, _ = fit_category("patchcore", {}, tmp_path, "anomaly-shapenet", "idler_riser0")
    (bulge,) = [s for s in ad3d.datasets.load("anomaly-shapenet", tmp_path, "idler_riser0") if s.label == 1]
    (region,) = det.score(bulge).regions  # before: two regions, both on the one bulge (3.9 % of the part apart)
    assert np.isin(region.indices, np.flatnonzero(bulge.labels)).any()


def test_scale_check_catches_a_model_for_another_part(fitted):
    huge = Scan(points=np.random.default_rng(0).random((500, 3)) * 100)
    with pytest.raises(ConfigError, match="size of the parts this model was trained on"):
        fitted.check_scale(huge)
    with pytest.raises(ConfigError, match="size of the parts this model was trained on"):
        fitted.score(huge)  # the library refuses it as the CLI does
    assert len(fitted.score(huge, force=True).point_scores) == 500  # unless told to go on


def test_a_corrupt_or_degenerate_scan_is_refused_by_name_never_scored(fitted, tmp_path):
    from command import run_ad3d

    from ad3d.errors import ScanFormatError
    from ad3d.io import write_scan

    good = Scan(points=np.random.default_rng(0).random((500, 3)).astype(np.float32) * 50, path="part.ply")
    corrupt = good.points.copy()
    corrupt[7] = [3.4e38, 0, 0]  # finite in float32, but every squared distance from it overflows
    with pytest.raises(ScanFormatError, match=r"'part.ply' has a coordinate of 3.4e\+38"):
        fitted.score(good.replace(points=corrupt), force=True)
    with pytest.raises(ScanFormatError, match="all 500 points lie at one place"):
        fitted.score(good.replace(points=np.ones((500, 3), np.float32)), force=True)
    with pytest.raises(ScanFormatError, match="one place"):
        ad3d.create("patchcore").fit([good, Scan(points=np.zeros((3, 3), np.float32))])
    with pytest.raises(ScanFormatError, match="has 3 points: at least 10"):  # before: fitted, then scored 0
        ad3d.create("patchcore").fit([good, Scan(points=np.eye(3, dtype=np.float32))])
    fitted.save(tmp_path / "m.ad3d")
    write_scan(tmp_path / "bad.ply", good.replace(points=corrupt))
    done = run_ad3d("score", tmp_path / "m.ad3d", tmp_path / "bad.ply", "--out", tmp_path / "out", "--force")
    assert done.returncode == 2 and "bad.ply' has a coordinate" in done.stderr
    assert not (tmp_path / "out" / "bad.json").exists()  # no ACCEPT, no bare NaN in a report


def test_a_non_finite_score_is_refused_not_accepted(fitted, monkeypatch):
    from ad3d.errors import ScoringError

    monkeypatch.setattr(fitted, "threshold_", 1e9)  # calibrated so that any finite score would be accepted
    monkeypatch.setattr(fitted, "_score", lambda scan: (np.full(len(scan), np.nan, np.float32), float("nan")))
    scan = Scan(points=np.random.default_rng(1).random((300, 3)).astype(np.float32), path="x.ply")
    with pytest.raises(ScoringError, match="'x.ply' a non-finite score .*300 of 300 point scores.*refused"):
        fitted.score(scan, force=True)


def test_out_of_fold_calibration_scores_each_normal_scan_by_a_model_that_never_saw_it(fitted, synth_root, tmp_path):
    from ad3d.pipeline import describe_calibration, fit_category

    normal = list(ds.load("anomaly-shapenet", synth_root, "idler_riser0", "train"))
    fitted.save(tmp_path / "m.ad3d")
    det = ad3d.load(tmp_path / "m.ad3d").calibrate_out_of_fold(normal, fpr=0.01)
    by_hand = [
        ad3d.create("patchcore", num_groups=1024).fit(normal[:i] + normal[i + 1 :]).score(normal[i]).object_score
        for i in range(len(normal))
    ]
    from scipy.stats import t

    n, mean, sd = len(by_hand), np.mean(by_hand), np.std(by_hand, ddof=1)
    assert det.threshold_ == pytest.approx(mean + t.ppf(0.99, n - 1) * sd * np.sqrt(1 + 1 / n))  # a t bound
    assert det.calibration_ == {"scans": len(normal), "method": f"out-of-fold over {len(normal)} folds", "fpr": 0.01}
    assert np.array_equal(det.bank_, fitted.bank_)  # the model itself is left as fitted
    assert "warning: a 1% false-reject rate needs about 100 normal scans" in describe_calibration(det)
    assert "prediction bounds (Student's t)" in describe_calibration(det)
    det.save(tmp_path / "c.ad3d")
    assert ad3d.load(tmp_path / "c.ad3d").calibration_ == det.calibration_
    cheap, info = fit_category("patchcore", {"num_groups": 1024}, synth_root, "anomaly-shapenet", "idler_riser0")
    assert cheap.calibration_["method"].startswith("out-of-fold") and info["calibration_scans"] == len(normal)
    assert info["train_scans"] == len(normal)  # calibrated out of fold: no normal scan is kept out of the model
    assert np.array_equal(cheap.bank_, ad3d.create("patchcore", num_groups=1024).fit(normal).bank_)
    learned, info = fit_category(
        "r3dad", {"iterations": 2, "eval_every": 1}, synth_root, "anomaly-shapenet", "idler_riser0"
    )
    assert learned.calibration_["method"] == "held-out normal scans" and info["calibration_scans"] == 1
    assert info["train_scans"] == len(normal) - 1


def test_scan_bounds_are_quantiles_when_the_scans_suffice_and_t_bounds_below():
    from scipy.stats import t

    from ad3d.detectors.base import scan_bound

    many = np.random.default_rng(0).normal(10, 2, 400)
    assert scan_bound(many, 0.01) == np.quantile(many, 0.99, method="higher")  # 400 >= 1 / 0.01
    few = np.array([9.0, 10.0, 11.0, 12.0])
    expected = 10.5 + t.ppf(0.95, 3) * np.std(few, ddof=1) * np.sqrt(1.25)
    assert scan_bound(few, 0.05) == pytest.approx(expected) and scan_bound(few, 0.05) > few.max()
    assert scan_bound(few, 0.01) > scan_bound(few, 0.05)  # review below reject, even from four scans
    assert scan_bound(np.array([3.0]), 0.01) == 3.0


def test_score_files_is_the_library_side_of_ad3d_score(fitted, synth_root, tmp_path):
    from ad3d.score_files import score_files

    good = ds.load("anomaly-shapenet", synth_root, "idler_riser0", "test")[4].path
    (tmp_path / "broken.pcd").write_text("not a point cloud")
    heard, out, stem = [], tmp_path / "out", Path(good).stem
    summary = score_files(fitted, [good, tmp_path / "broken.pcd"], out, on_result=lambda *a: heard.append(a))
    assert [name for _, name, _ in summary.scored] == [stem] and len(heard) == 1
    assert (out / f"{stem}.json").exists() and (out / f"{stem}.ply").exists()
    ((path, line),) = summary.failed
    assert path.name == "broken.pcd" and "broken.pcd" in line  # one line naming the file
    with pytest.raises(ConfigError, match="would overwrite the input"):
        score_files(fitted, [out / f"{stem}.ply"], out)


def test_what_is_not_a_scan_is_refused_in_words(fitted):
    points = np.random.default_rng(0).random((100, 3))
    with pytest.raises(ConfigError, match="expected a Scan .* got ndarray"):
        fitted.score(points)
    with pytest.raises(ConfigError, match="expected a Scan .* got NoneType"):
        fitted.score(None)
    with pytest.raises(ConfigError, match="fit takes a list of Scans, got NoneType"):
        ad3d.create("patchcore").fit(None)
    with pytest.raises(ConfigError, match="score_many takes a list of Scans, got Scan"):
        fitted.score_many(Scan(points=points))


def test_regions_link_by_voxels_when_pairs_would_not_fit_like_all_pairs_do():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from ad3d.detectors.regions import _voxel_links

    rng = np.random.default_rng(0)
    blobs = [rng.random((800, 3)) * 0.5 + shift for shift in ([0, 0, 0], [4, 0, 0], [0, 4, 0], [0.9, 0, 0])]
    points = np.concatenate(blobs)  # blobs 0 and 3 lie 0.4 apart, the others 3.5 and more from any

    def components(pairs):
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(points),) * 2)
        return connected_components(graph, directed=False)[1]

    exact = components(cKDTree(points).query_pairs(0.45, output_type="ndarray"))
    voxels = components(_voxel_links(points, 0.45))
    assert len(set(exact)) == len(set(voxels)) == 3
    assert all(len(set(voxels[exact == c])) == 1 for c in set(exact))  # the same grouping
