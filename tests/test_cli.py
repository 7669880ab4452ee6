"""The ad3d command: help, doctor, datasets; bad input gives one line and exit code 2, no traceback."""

from command import run_ad3d as run
from native import make_anomaly_shapenet


def test_help_and_doctor():
    assert run("--help").returncode == 0
    doctor = run("doctor")
    assert doctor.returncode == 0 and "open3d" in doctor.stdout and "torch" in doctor.stdout


def test_datasets_commands(tmp_path):
    make_anomaly_shapenet(tmp_path)
    listed = run("datasets", "list", tmp_path, "--format", "anomaly-shapenet")
    assert listed.stdout.split() == ["cap0", "vase0"]
    described = run("datasets", "describe", tmp_path, "--format", "anomaly-shapenet")
    assert "bulge 1, crack 1, good 2" in described.stdout
    verified = run("datasets", "verify", tmp_path, "--format", "anomaly-shapenet", "--quiet")
    assert verified.returncode == 0 and "0 problems" in verified.stderr
    (tmp_path / "pcd/cap0/GT/cap0_bulge0.txt").write_text("1,2,3,7\n")
    broken = run("datasets", "verify", tmp_path, "--format", "anomaly-shapenet", "--quiet")
    assert broken.returncode == 2 and "labels must be 0 or 1" in broken.stdout


def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = run("datasets", "describe", tmp_path / "missing", "--format", "real3d")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "missing" in result.stderr
    debug = run("--debug", "datasets", "describe", tmp_path / "missing", "--format", "real3d")
    assert "Traceback" in debug.stderr


def test_param_values_parse_to_numbers_bools_none_and_tuples():
    from ad3d.detectors.registry import parse_params

    assert parse_params(["a=3", "b=0.5", "c=true", "d=none", "e=64,128", "f=ddim"]) == {
        "a": 3,
        "b": 0.5,
        "c": True,
        "d": None,
        "e": (64, 128),
        "f": "ddim",
    }
