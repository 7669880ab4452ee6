"""The viewer's interactive controls, driven on an off-screen plotter (no display here)."""

import numpy as np
import pytest

pytest.importorskip("pyvista")

from ad3d.types import Scan  # noqa: E402
from ad3d.viewers import interactive_plotter, render  # noqa: E402


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    pts = rng.random((500, 3))
    scores = np.where(np.linalg.norm(pts - 0.5, axis=1) < 0.15, 5.0, rng.random(500))
    return Scan(points=pts), scores, (scores > 2).astype(np.uint8)


def test_slider_gt_toggle_and_picking(scored):
    scan, scores, gt = scored
    plotter, controls = interactive_plotter(scan, scores, threshold=1.0, gt=gt, off_screen=True)
    actors = controls["actors"]
    controls["set_threshold"](3.0)
    assert tuple(actors["scan"].mapper.scalar_range) == (3.0, 5.0)  # points under 3 now greyed
    controls["show_gt"](False)
    assert not actors["gt"].GetVisibility()
    controls["show_gt"](True)
    assert actors["gt"].GetVisibility()
    controls["pick"](scan.points[42] + 1e-9)
    assert controls["last_pick"] == f"point 42: score {scores[42]:.4g}"
    plotter.close()


def test_render_checks_score_length(scored, tmp_path):
    from ad3d.errors import ConfigError

    scan, scores, _ = scored
    with pytest.raises(ConfigError, match="3 scores for a scan of 500 points"):
        render(scan, scores[:3], screenshot=tmp_path / "x.png")


def test_view_without_a_display_says_which_flag_to_use(tmp_path, shared_data):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run(
        [sys.executable, "-m", "ad3d.cli", "view", str(shared_data / "pcd" / "bun0.pcd")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 2 and "no display" in out.stderr and "--screenshot" in out.stderr
    shot = subprocess.run(
        [
            sys.executable,
            "-m",
            "ad3d.cli",
            "view",
            str(shared_data / "pcd" / "bun0.pcd"),
            "--screenshot",
            str(tmp_path / "b.png"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert shot.returncode == 0 and "bad X server" not in shot.stderr and "WARN" not in shot.stderr
