"""PyVista anomaly overlays: an interactive window, off-screen PNG (2x2 views) and HTML export.

Points are coloured by score with a perceptual colormap (inferno); points under the threshold are
grey. The window has a threshold slider, a ground-truth toggle, region labels and point picking
that prints the picked point's score. With deviations (the `deviation` detector: signed distance to the
nominal surface), a second view beside the score shows them on a diverging map symmetric around 0, in
scan units (blue: material missing, red: material in excess). Needs the `viewer` extra (pyvista).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError
from ad3d.types import DefectRegion, Scan

SCORE_BAR = {  # vertical at the right edge; what is grey (normal) and blue (ground truth) says the legend
    "title": "anomaly score",
    "below_label": " ",  # the grey swatch under the bar; its meaning is in the legend
    "vertical": True,
    "position_x": 0.86,
    "position_y": 0.12,
    "width": 0.08,
    "height": 0.7,
    "n_labels": 4,
    "fmt": "%.3g",
}
VIEWS = (("iso", "isometric"), ("xy", "top (xy)"), ("xz", "front (xz)"), ("yz", "side (yz)"))


def _pyvista():
    try:
        import pyvista as pv
        from vtkmodules.vtkCommonCore import vtkLogger
    except ImportError:
        raise ConfigError("the viewer needs pyvista: pip install 'ad3d[viewer]'") from None
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)  # off-screen rendering warns of no X server
    return pv


def has_display() -> bool:
    """Whether an interactive window can open: always on macOS and Windows, on Linux only with X or Wayland."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _add_overlay(plotter, scan: Scan, scores, threshold, gt, regions, point_size: float):
    pv = _pyvista()
    cloud = pv.PolyData(np.asarray(scan.points, dtype=np.float64))
    actors = {}
    if scores is None:
        actors["scan"] = plotter.add_mesh(
            cloud, color="lightgrey", point_size=point_size, render_points_as_spheres=True
        )
    else:
        cloud["score"] = np.asarray(scores, dtype=np.float64)
        top = float(np.max(scores))
        low = float(threshold) if threshold is not None else float(np.min(scores))
        actors["scan"] = plotter.add_mesh(
            cloud,
            scalars="score",
            cmap="inferno",
            clim=[low, max(top, low + 1e-12)],
            below_color="lightgrey",
            point_size=point_size,
            render_points_as_spheres=True,
            scalar_bar_args=SCORE_BAR,
        )
        if threshold is not None and np.any(cloud["score"] >= threshold):  # defective points drawn larger
            hot = cloud.extract_points(np.asarray(scores) >= threshold, adjacent_cells=False)
            plotter.add_mesh(
                hot,
                scalars="score",
                cmap="inferno",
                clim=[low, max(top, low + 1e-12)],
                point_size=point_size * 1.8,
                render_points_as_spheres=True,
                show_scalar_bar=False,
            )
    if gt is not None and np.any(gt):
        outline = pv.PolyData(np.asarray(scan.points[np.asarray(gt) > 0], dtype=np.float64))
        actors["gt"] = plotter.add_mesh(
            outline,
            color="deepskyblue",
            opacity=0.15,
            point_size=point_size * 3,
            render_points_as_spheres=True,
            label="ground truth",
        )
    entries = _legend(scores, threshold, gt)
    if entries:
        plotter.add_legend(
            entries, bcolor=(0.2, 0.2, 0.2), border=True, size=(0.34, 0.05 * len(entries)), loc="lower left"
        )
    if regions:
        centroids = np.array([r.centroid for r in regions], dtype=np.float64)
        labels = [f"R{i + 1} {r.max_score:.3g}{_measured(r, scan.units)}" for i, r in enumerate(regions)]
        plotter.add_point_labels(centroids, labels, font_size=12, point_color="cyan", shape_opacity=0.5)
    return actors


def _legend(scores, threshold, gt) -> list[tuple[str, str]]:
    """What the greys and the blue mean: (label, colour) entries of the view's legend."""
    entries = []
    if scores is not None and threshold is not None:
        entries.append((f"normal: score under {threshold:.3g}", "lightgrey"))
    if gt is not None and np.any(gt):
        entries.append(("ground truth: the true defect", "deepskyblue"))
    return entries


def _html_legend(scores, threshold, gt, deviations, units: str | None) -> str:
    """The legend and colour scales as HTML over the page (the exported 3D scene carries no 2D annotations)."""
    import html

    ramp = '<span style="display:inline-block;width:120px;height:10px;vertical-align:middle;background:{}"></span>'
    rows = []
    if scores is not None:
        low = float(threshold) if threshold is not None else float(np.min(scores))
        inferno = ramp.format("linear-gradient(to right, #000004, #57106e, #bc3754, #f98e09, #fcffa4)")
        rows.append(f"<div>anomaly score {low:.3g} {inferno} {float(np.max(scores)):.3g}</div>")
    for label, colour in _legend(scores, threshold, gt):
        rows.append(f'<div><span style="color:{colour}">&#9679;</span> {html.escape(label)}</div>')
    if deviations is not None:
        bound = float(np.max(np.abs(deviations)))
        diverging = ramp.format("linear-gradient(to right, #2166ac, #f7f7f7, #b2182b)")
        rows.append(f"<div>deviation {-bound:.3g} {diverging} {bound:+.3g} {html.escape(units or 'scan units')}</div>")
    style = (
        "position:fixed;left:10px;bottom:10px;z-index:10;padding:6px 10px;background:rgba(40,40,40,0.85);"
        "color:#eee;font:13px sans-serif;line-height:1.6;border-radius:4px"
    )
    return f'<div id="ad3d-legend" style="{style}">{"".join(rows)}</div>'


def _measured(region: DefectRegion, units: str | None) -> str:
    """A region's largest deviation for its label, when its detector measured one."""
    return "" if region.max_deviation is None else f", {region.max_deviation:+.3g} {units or 'scan units'}"


def _add_deviation(plotter, scan: Scan, deviations, point_size: float):
    """The signed deviation of every point, diverging colours symmetric around 0 (white: on the surface)."""
    pv = _pyvista()
    cloud = pv.PolyData(np.asarray(scan.points, dtype=np.float64))
    cloud["deviation"] = np.asarray(deviations, dtype=np.float64)
    bound = float(np.max(np.abs(deviations))) or 1.0
    return plotter.add_mesh(
        cloud,
        scalars="deviation",
        cmap="RdBu_r",
        clim=[-bound, bound],
        point_size=point_size,
        render_points_as_spheres=True,
        scalar_bar_args={"title": f"deviation ({scan.units or 'scan units'})"},
    )


def render(
    scan: Scan,
    scores=None,
    *,
    threshold: float | None = None,
    gt=None,
    regions: list[DefectRegion] | None = None,
    deviations=None,
    screenshot: str | Path | None = None,
    html: str | Path | None = None,
    show: bool = False,
    title: str = "ad3d",
    point_size: float = 6.0,
) -> None:
    """Draw `scan` coloured by `scores` (N,), greyed under `threshold`, with optional ground truth, and its
    signed `deviations` (N,) from the nominal surface beside it when given.

    screenshot: PNG of a 2x2 grid of views (with deviations: score on the left, deviation on the right, in
    two views), rendered off-screen. html: a self-contained interactive page. show: an interactive window
    with a threshold slider, GT toggle and point picking.
    """
    pv = _pyvista()
    for name, values in (("scores", scores), ("deviations", deviations)):
        if values is not None and len(values) != len(scan):
            raise ConfigError(f"{len(values)} {name} for a scan of {len(scan)} points")
    if screenshot is not None:
        plotter = pv.Plotter(off_screen=True, shape=(2, 2), window_size=(1400, 1100))
        views = VIEWS if deviations is None else [v for v in VIEWS[:2] for _ in range(2)]
        for i, (view, name) in enumerate(views):
            plotter.subplot(i // 2, i % 2)
            if deviations is not None and i % 2:
                _add_deviation(plotter, scan, deviations, point_size)
                name = f"{name}, deviation"
            else:
                _add_overlay(plotter, scan, scores, threshold, gt, regions, point_size)
            plotter.add_text(name, font_size=10)
            getattr(plotter, f"view_{'isometric' if view == 'iso' else view}")()
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        plotter.screenshot(str(screenshot))
        plotter.close()
    if html is not None:
        plotter = pv.Plotter(off_screen=True, shape=(1, 1 if deviations is None else 2))
        _add_overlay(plotter, scan, scores, threshold, gt, regions, point_size)
        plotter.add_text(title, font_size=10)
        if deviations is not None:
            plotter.subplot(0, 1)
            _add_deviation(plotter, scan, deviations, point_size)
            plotter.link_views()
        Path(html).parent.mkdir(parents=True, exist_ok=True)
        plotter.trame.export_html(str(html))  # Plotter.export_html is deprecated (PyVista 0.47+)
        plotter.close()
        page = Path(html).read_text(encoding="utf-8")
        legend = _html_legend(scores, threshold, gt, deviations, scan.units)
        Path(html).write_text(page.replace("</body>", legend + "</body>", 1), encoding="utf-8")
    if show:
        if not has_display():
            raise ConfigError(
                "no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set): "
                "write an image with --screenshot FILE.png or a web page with --html FILE.html"
            )
        plotter, _ = interactive_plotter(
            scan,
            scores,
            threshold=threshold,
            gt=gt,
            regions=regions,
            deviations=deviations,
            title=title,
            point_size=point_size,
        )
        plotter.show()


def thumbnail(scan: Scan, scores, path: str | Path, *, threshold=None, gt=None, size=(360, 300)) -> None:
    """A small off-screen PNG of one isometric view of the overlay (the benchmark report's thumbnails)."""
    pv = _pyvista()
    plotter = pv.Plotter(off_screen=True, window_size=size)
    _add_overlay(plotter, scan, scores, threshold, gt, None, point_size=3.0)
    plotter.remove_scalar_bar()
    plotter.view_isometric()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plotter.screenshot(str(path))
    plotter.close()


def interactive_plotter(
    scan: Scan,
    scores=None,
    *,
    threshold=None,
    gt=None,
    regions=None,
    deviations=None,
    title: str = "ad3d",
    point_size: float = 6.0,
    off_screen: bool = False,
):
    """(plotter, controls): the window, not yet shown, with a threshold slider, a ground-truth
    checkbox and point picking (and, with deviations, their map in a linked view on the right);
    `controls` holds the actors and the callbacks the widgets call (set_threshold, show_gt, pick), so
    the behaviour can be driven without a display."""
    pv = _pyvista()
    plotter = pv.Plotter(title=title, off_screen=off_screen, shape=(1, 1 if deviations is None else 2))
    if deviations is not None:
        plotter.subplot(0, 1)
        controls_deviation = _add_deviation(plotter, scan, deviations, point_size)
        plotter.subplot(0, 0)
    actors = _add_overlay(plotter, scan, scores, threshold, gt, regions, point_size)
    if deviations is not None:
        actors["deviation"] = controls_deviation
        plotter.link_views()
    controls: dict = {"actors": actors}
    if scores is not None:
        top = float(np.max(scores))

        def set_threshold(value):
            actors["scan"].mapper.scalar_range = (value, max(top, value + 1e-12))

        controls["set_threshold"] = set_threshold
        plotter.add_slider_widget(
            set_threshold,
            [float(np.min(scores)), top],
            value=threshold if threshold is not None else float(np.min(scores)),
            title="threshold",
            pointa=(0.6, 0.92),
            pointb=(0.95, 0.92),
        )
    if "gt" in actors:
        controls["show_gt"] = lambda on: actors["gt"].SetVisibility(on)
        plotter.add_checkbox_button_widget(controls["show_gt"], value=True, size=30, position=(10, 10))
        plotter.add_text("ground truth", position=(50, 14), font_size=9)
    if scores is not None:
        tree_points = np.asarray(scan.points)

        def picked(point):
            i = int(np.argmin(np.linalg.norm(tree_points - np.asarray(point), axis=1)))
            message = f"point {i}: score {scores[i]:.4g}"
            if deviations is not None:
                message += f", deviation {deviations[i]:+.4g} {scan.units or 'scan units'}"
            plotter.add_text(message, name="pick", position="lower_right", font_size=10)
            controls["last_pick"] = message

        controls["pick"] = picked
        plotter.enable_point_picking(callback=picked, show_message=False, left_clicking=True)
    return plotter, controls


def view_file(
    path: str | Path,
    *,
    scores: str | Path | None = None,
    threshold: float | None = None,
    gt: bool = False,
    screenshot: str | Path | None = None,
    html: str | Path | None = None,
) -> list[str]:
    """What `ad3d view` does: a result PLY from `ad3d score` (its scores, deviations and the threshold of its
    JSON report beside it) or any scan with a scores file; a window, or the PNG / HTML asked for (returned)."""
    import json

    from ad3d.detectors.regions import extract_regions
    from ad3d.io import read_scan

    path = Path(path)
    scan = read_scan(path)
    report = path.with_suffix(".json")
    meta = json.loads(report.read_text()) if report.is_file() else {}
    if scores is not None:
        values = np.load(scores) if str(scores).endswith(".npy") else np.loadtxt(scores)
    else:
        values = scan.fields.get("score")
    threshold = threshold if threshold is not None else meta.get("point_threshold")
    truth = None
    if gt:
        truth = scan.labels if scan.labels is not None else scan.fields.get("label")
        if truth is None:
            raise ConfigError(
                f"'{path}' has no per-point ground truth (no label property): a result keeps the labels only "
                "of a scan that carried them (a PLY with a label property, a dataset scan scored through the "
                "library); drop --gt for this one"
            )
    deviations = scan.fields.get("deviation")
    regions = None
    if values is not None and threshold is not None:
        regions = extract_regions(scan.points, values, threshold, deviations=deviations)
    render(
        scan,
        values,
        threshold=threshold,
        gt=truth,
        regions=regions,
        deviations=deviations,
        screenshot=screenshot,
        html=html,
        show=not (screenshot or html),
        title=path.name,
    )
    return [str(out) for out in (screenshot, html) if out]
