"""Headless Chromium for tests that check a page we write actually renders (the viewer's export, the bench
report): a screenshot of it, or a skip where Debian's chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def screenshot(page: Path, work: Path, size: tuple[int, int] = (800, 600), *, webgl: bool = False) -> np.ndarray:
    """The page rendered in headless Chromium as an (H, W, 3) int array. webgl: software WebGL (SwiftShader)
    and time for scripts to draw."""
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package chromium)")
    shot = work / "page.png"
    graphics = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--virtual-time-budget=15000"]
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            *(graphics if webgl else ["--disable-gpu"]),
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={work / 'chrome'}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)
