"""One contract for every registered detector, as scikit-learn's check_estimator and anomalib's model tests
hold one for theirs: parameters come back as passed, clone, presets, every point scored with finite scores,
save / load scoring the same bits, determinism, an unfitted one-class detector refusing to score and a
zero-shot one scoring a batch with no fit."""

import numpy as np
import pytest
from test_neural_detectors import TINY, box_scan

import ad3d
from ad3d.detectors.registry import BUILTIN, detector_class, preset
from ad3d.errors import ConfigError

QUICK = {  # small enough to fit in seconds; the learned detectors as their own tests run them
    **TINY,
    "patchcore": {"num_points": 1024, "num_groups": 128},
    "musc": {"num_groups": 64, "group_size": 16, "grow_step": 8, "search_size": 32},
    "lsfa": {"modalities": ("xyz",), "iterations": 4, "warmup": 2, "num_groups": 64},
    "simple3d": {"max_points": 1024, "num_groups": 128, "group_size": 16, "smooth_centres": 64},
    "deviation": {"nominal_points": 1000, "smooth_k": 8},
}


@pytest.fixture(scope="module")
def scans():
    return [box_scan(seed=s) for s in range(5)]


def test_every_builtin_detector_has_a_contract_entry():
    # ad3d.available() also lists what other tests register for themselves; ad3d's own are BUILTIN
    assert sorted(QUICK) == sorted(BUILTIN) and set(BUILTIN) <= set(ad3d.available())


@pytest.mark.parametrize("name", sorted(QUICK))
def test_parameters_come_back_as_passed_and_clone_keeps_them(name):
    det = ad3d.create(name, **QUICK[name])
    params = det.get_params()
    for key, value in QUICK[name].items():
        assert params[key] == value and type(params[key]) is type(value), key
    twin = det.clone()
    assert twin is not det and twin.get_params() == params and not twin._fitted()
    with pytest.raises(ConfigError, match="has no parameter"):
        det.set_params(no_such_parameter=1)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_presets_build_and_the_cpu_preset_is_the_default(name):
    presets = getattr(detector_class(name), "PRESETS", None)
    assert presets is not None and "cpu" in presets, f"{name} has no cpu preset"
    assert preset(name, "cpu") == {} or all(
        ad3d.create(name).get_params()[k] == v for k, v in preset(name, "cpu").items()
    )
    for preset_name in presets:
        ad3d.create(name, **preset(name, preset_name))  # every preset is a valid parameter set


@pytest.mark.parametrize("name", sorted(QUICK))
def test_fit_score_save_load_and_determinism(name, scans, tmp_path):
    train, test = scans[:4], scans[4:]
    zero_shot = detector_class(name).learning_type == "zero-shot"
    if not zero_shot:
        with pytest.raises(ConfigError, match="not fitted"):
            ad3d.create(name, **QUICK[name]).score(test[0])
    batch = test + train[:2]
    det = ad3d.create(name, **QUICK[name])
    first = det.score_many(batch) if zero_shot else det.fit(train).score_many(batch)
    for scan, result in zip(batch, first):
        assert result.point_scores.shape == (len(scan),) and np.isfinite(result.point_scores).all()
        assert np.isfinite(result.object_score)
    again = ad3d.create(name, **QUICK[name])
    second = again.score_many(batch) if zero_shot else again.fit(train).score_many(batch)
    assert all(np.array_equal(a.point_scores, b.point_scores) for a, b in zip(first, second))  # deterministic
    if zero_shot:
        det.fit(train[:2])  # its reference pool
    det.save(tmp_path / "m.ad3d")
    back = ad3d.load(tmp_path / "m.ad3d")
    assert back.get_params() == det.get_params()
    scored, reloaded = det.score_many(batch), back.score_many(batch)
    assert all(np.array_equal(a.point_scores, b.point_scores) for a, b in zip(scored, reloaded))
