"""One contract for every registered detector, as scikit-learn's check_estimator and anomalib's model tests
hold one for theirs: parameters come back as passed, clone, presets (cpu, and paper where the method has a
published configuration), every point scored with finite scores, save / load scoring the same bits,
determinism, an unfitted one-class detector refusing to score, a zero-shot one scoring a batch with no fit,
and device="cuda" accepted. The checks are functions, so that a detector breaking one rule is shown to fail."""

import numpy as np
import pytest
from test_neural_detectors import TINY, box_scan

import ad3d
from ad3d.detectors import registry
from ad3d.detectors.base import Detector
from ad3d.detectors.registry import BUILTIN, detector_class, preset
from ad3d.errors import ConfigError
from ad3d.types import Scan

QUICK = {  # small enough to fit in seconds; the learned detectors as their own tests run them
    **TINY,
    "patchcore": {"num_points": 1024, "num_groups": 128},
    "musc": {"num_groups": 64, "group_size": 16, "grow_step": 8, "search_size": 32},
    "lsfa": {"modalities": "xyz", "iterations": 4, "warmup": 2, "num_groups": 64},
    "simple3d": {"max_points": 1024, "num_groups": 128, "group_size": 16, "smooth_centres": 64},
    "deviation": {"nominal_points": 1000, "smooth_k": 8},
}
PUBLISHED = {"r3dad", "mc4ad", "musc", "lsfa", "simple3d"}  # a release with its own settings: a paper preset


@pytest.fixture(scope="module")
def scans():
    return [box_scan(seed=s) for s in range(5)]


# --- the checks --------------------------------------------------------------------------------------
def check_parameters(name: str, params: dict) -> None:
    """Parameters come back exactly as passed (value and type), clone keeps them, unknown names refused."""
    det = ad3d.create(name, **params)
    back = det.get_params()
    for key, value in params.items():
        assert back[key] == value and type(back[key]) is type(value), f"{name}: {key} came back as {back[key]!r}"
    twin = det.clone()
    assert twin is not det and twin.get_params() == back and not twin._fitted(), f"{name}: clone"
    with pytest.raises(ConfigError, match="has no parameter"):
        det.set_params(no_such_parameter=1)


def check_presets(name: str) -> None:
    """A cpu preset equal to the defaults, a paper preset where the method was published; all valid."""
    presets = getattr(detector_class(name), "PRESETS", None)
    assert presets is not None and "cpu" in presets, f"{name} has no cpu preset"
    defaults = ad3d.create(name).get_params()
    assert all(defaults[k] == v for k, v in preset(name, "cpu").items()), f"{name}: cpu preset is not the default"
    assert name not in PUBLISHED or "paper" in presets, f"{name} has no paper preset"
    for preset_name in presets:
        ad3d.create(name, **preset(name, preset_name)).check_params()


def check_scoring(name: str, params: dict, train: list, batch: list, folder) -> None:
    """Unfitted one-class detectors refuse to score, zero-shot ones score a batch with no fit; every point
    scored and finite; the same bits from a second detector, and from the saved and loaded model."""
    zero_shot = detector_class(name).learning_type == "zero-shot"
    if not zero_shot:
        with pytest.raises(ConfigError, match="not fitted"):
            ad3d.create(name, **params).score(batch[0])
    det = ad3d.create(name, **params)
    first = det.score_many(batch) if zero_shot else det.fit(train).score_many(batch)
    for scan, result in zip(batch, first):
        assert result.point_scores.shape == (len(scan),), f"{name}: not every point scored"
        assert np.isfinite(result.point_scores).all() and np.isfinite(result.object_score), f"{name}: not finite"
    again = ad3d.create(name, **params)
    second = again.score_many(batch) if zero_shot else again.fit(train).score_many(batch)
    assert all(np.array_equal(a.point_scores, b.point_scores) for a, b in zip(first, second)), f"{name}: random"
    if zero_shot:
        det.fit(train[:2])  # its reference pool
    det.save(folder / f"{name}.ad3d")
    back = ad3d.load(folder / f"{name}.ad3d")
    assert back.get_params() == det.get_params(), f"{name}: parameters changed by save / load"
    scored, reloaded = det.score_many(batch), back.score_many(batch)
    assert all(np.array_equal(a.point_scores, b.point_scores) for a, b in zip(scored, reloaded)), f"{name}: load"


# --- every registered detector -----------------------------------------------------------------------
def test_every_builtin_detector_has_a_contract_entry():
    # ad3d.available() also lists what other tests register for themselves; ad3d's own are BUILTIN
    assert sorted(QUICK) == sorted(BUILTIN) and set(BUILTIN) <= set(ad3d.available())


@pytest.mark.parametrize("name", sorted(QUICK))
def test_parameters_come_back_as_passed_and_clone_keeps_them(name):
    check_parameters(name, QUICK[name])


@pytest.mark.parametrize("name", sorted(QUICK))
def test_presets(name):
    check_presets(name)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_fit_score_save_load_and_determinism(name, scans, tmp_path):
    check_scoring(name, QUICK[name], scans[:4], scans[4:] + scans[:2], tmp_path)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_every_detector_takes_a_cuda_device(name, scans, tmp_path):
    det = ad3d.create(name, **{**QUICK[name], "device": "cuda"})
    assert det.get_params()["device"] == "cuda"
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the device is accepted; scoring on it is checked where one is")
    check_scoring(name, {**QUICK[name], "device": "cuda"}, scans[:4], scans[4:] + scans[:2], tmp_path)


def test_a_gpu_detector_fits_and_scores_with_deterministic_kernels_and_restores_the_setting():
    import torch

    from ad3d.detectors.base import deterministic_kernels

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels("cpu"):
        assert not torch.are_deterministic_algorithms_enabled()  # the CPU kernels are deterministic already
    with deterministic_kernels("cuda:0"):
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()

    seen = []

    class Records(Toy):  # notes the setting inside its own fit and score (no GPU needed: the device is a name)
        def _fit(self, scans, progress):
            seen.append(torch.are_deterministic_algorithms_enabled())
            super()._fit(scans, progress)

        def _score(self, scan):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super()._score(scan)

    cloud = [Scan(points=np.random.default_rng(0).normal(size=(50, 3)))]
    Records(device="cuda").fit(cloud).score(cloud[0])
    Records(device="cpu").fit(cloud).score(cloud[0])
    assert seen == [True, True, False, False] and not torch.are_deterministic_algorithms_enabled()


def test_a_model_saved_under_the_old_parameter_names_loads(scans, tmp_path):
    import json

    from safetensors.numpy import load_file, save_file

    from ad3d.detectors import model_file

    ad3d.create("patchcore", **QUICK["patchcore"]).fit(scans[:2]).save(tmp_path / "new.ad3d")
    header = model_file._read_header(tmp_path / "new.ad3d")
    params = header["params"]
    params["num_centres"], params["features"] = params.pop("num_groups"), params.pop("point_features")
    tensors = load_file(str(tmp_path / "new.ad3d"))
    header["sha256"] = model_file._digest(tensors, header)
    save_file(tensors, str(tmp_path / "old.ad3d"), metadata={"ad3d": json.dumps(header)})
    back = ad3d.load(tmp_path / "old.ad3d")
    assert back.get_params()["num_groups"] == 128 and back.get_params()["point_features"] == "fpfh"


def test_a_simple3d_model_saved_before_its_added_parameters_keeps_scoring_and_refitting_as_it_did(tmp_path):
    import json

    from safetensors.numpy import load_file, save_file

    from ad3d.detectors import model_file

    rng = np.random.default_rng(0)
    clouds = [Scan(points=rng.normal(size=(n, 3)).astype(np.float32)) for n in (600, 1500)]
    then = {"thin_share": 1.0, "spacing": "scan", "thinning": "grid", "fit_draws": 1}  # what such a model did
    params = {**QUICK["simple3d"], **then, "normals": "outward"}  # the default normals until 2026-12-04, stored
    ad3d.create("simple3d", **params).fit(clouds).save(tmp_path / "new.ad3d")
    header = model_file._read_header(tmp_path / "new.ad3d")
    for name in then:  # as written before the parameters existed
        del header["params"][name]
    del header["state"]["voxel_"]
    tensors = load_file(str(tmp_path / "new.ad3d"))
    header["sha256"] = model_file._digest(tensors, header)
    save_file(tensors, str(tmp_path / "old.ad3d"), metadata={"ad3d": json.dumps(header)})
    old, new = ad3d.load(tmp_path / "old.ad3d"), ad3d.load(tmp_path / "new.ad3d")
    assert {name: old.get_params()[name] for name in then} == then and old.get_params()["normals"] == "outward"
    np.testing.assert_array_equal(old.score(clouds[1]).point_scores, new.score(clouds[1]).point_scores)
    np.testing.assert_array_equal(old.fit(clouds).bank_, new.fit(clouds).bank_)
    fresh = ad3d.create("simple3d").get_params()
    assert [fresh[name] for name in (*then, "normals")] == [0.5, "fit", "fps", 4, "adaptive"]  # a new model's


# --- the checks catch a detector that breaks a rule ---------------------------------------------------
class Toy(Detector):
    """A detector that keeps the scans' mean distance to the centroid and scores each point's excess."""

    name = "toy"
    PRESETS = {"cpu": {}}
    _state_scalars = ("radius_",)
    radius_ = None

    def __init__(self, scale: float = 1.0, widths: tuple = (1, 2), device: str = "cpu", seed: int = 0):
        self._store_params(locals())

    def _fit(self, scans, progress):
        self.radius_ = float(np.mean([np.linalg.norm(s.points - s.points.mean(0), axis=1).mean() for s in scans]))

    def _fitted(self):
        return self.radius_ is not None

    def _score(self, scan):
        scores = self.scale * np.abs(np.linalg.norm(scan.points - scan.points.mean(0), axis=1) - self.radius_)
        return scores, float(scores.max())


class ChangesParameters(Toy):  # turns a list into a tuple, as lsfa and musc once did with modalities
    def __init__(self, scale: float = 1.0, widths: tuple = (1, 2), device: str = "cpu", seed: int = 0):
        super().__init__(scale, tuple(widths), device, seed)


class ForgetsOnSave(Toy):  # learned state not saved: a loaded model scores differently
    _state_scalars = ()

    def _import_state(self, tensors):
        self.radius_ = 0.0


class ScoresSomePoints(Toy):
    def _score(self, scan):
        scores, score = super()._score(scan)
        return scores[::2], score


class Random(Toy):
    def _score(self, scan):
        scores, score = super()._score(scan)
        return scores + np.random.default_rng().random(len(scores)) * 1e-3, score


class ScoresUnfitted(Toy):
    def _check_fitted(self):
        pass

    def _score(self, scan):
        return np.zeros(len(scan)), 0.0


class NoCpuPreset(Toy):
    PRESETS = {"fast": {"scale": 2.0}}


@pytest.mark.parametrize(
    "broken, check",
    [
        (ChangesParameters, "parameters"),
        (ForgetsOnSave, "scoring"),
        (ScoresSomePoints, "scoring"),
        (Random, "scoring"),
        (ScoresUnfitted, "scoring"),
        (NoCpuPreset, "presets"),
    ],
)
def test_the_contract_fails_a_detector_that_breaks_a_rule(broken, check, scans, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTERED, "toy", Toy)
    run = {
        "parameters": lambda: check_parameters("toy", {"scale": 2.0, "widths": [1, 2]}),
        "scoring": lambda: check_scoring("toy", {"scale": 2.0}, scans[:3], scans[3:], tmp_path),
        "presets": lambda: check_presets("toy"),
    }[check]
    run()  # the well-behaved toy passes
    monkeypatch.setitem(registry._REGISTERED, "toy", broken)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        run()
