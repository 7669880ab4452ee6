"""Write a complete semi-synthetic benchmark in a native layout from clean meshes or scans.

Every scan of a category is a fresh area-weighted sampling of the source mesh (or a random 90 %
subset of a source scan); test scans get one planted defect each. Then the acquisition
(ad3d.synth.acquisition) makes it look measured: a varying point count, a single view for Real3D-AD
test scans, sensor noise and a slightly different pose per scan. The loaders read the result back like
the real benchmark, so every detector is measured through the same path as on real data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError
from ad3d.io._common import remove_leftovers, staging_prefix, umask_mode
from ad3d.synth.acquisition import Acquisition, partial_view
from ad3d.synth.defects import DEFECTS, GEOMETRIC, plant
from ad3d.types import Scan

LAYOUTS = ("anomaly-shapenet", "real3d", "mvtec3d")
MANIFEST = "defects.json"  # at the dataset root: per test scan file, the planted defect's kind and height
MESH_SUFFIXES = (".obj", ".stl", ".off", ".ply")


def source_files(source: str | os.PathLike) -> list[Path]:
    """The meshes and scans to draw from: one file, or every one under a folder (recursively, sorted)."""
    from ad3d.io import SCAN_SUFFIXES

    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConfigError(f"source '{source}' does not exist")
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES + SCAN_SUFFIXES)
    if not found:
        raise ConfigError(f"no scans or meshes under '{source}'")
    return found


def category_name(path: Path) -> str:
    """A category name from a file name: lower case, letters, digits and underscores."""
    return re.sub(r"[^a-z0-9]+", "_", path.stem.lower()).strip("_") or "part"


def _draw(source: Path, points: int, seed: int) -> Scan:
    """One clean scan of the source: a surface sampling of a mesh, or a random subset of a scan."""
    from ad3d.io import load_trimesh, read_scan, sample_surface

    if source.suffix.lower() in MESH_SUFFIXES:
        mesh = load_trimesh(source)
        if len(mesh.faces):
            pts, normals = sample_surface(mesh, points, seed)
            return Scan(points=pts, normals=normals)
    scan = read_scan(source)
    rng = np.random.default_rng(seed)
    take = rng.choice(len(scan), size=min(points, int(0.9 * len(scan))), replace=False)
    return scan.subset(np.sort(take))


def _write(layout: str, root: Path, cat: str, role: str, name: str, scan: Scan) -> Path:
    """Write one scan (and its ground truth: x y z label rows) in the layout; return the scan file's path."""
    from ad3d.io import write_pcd

    if layout == "anomaly-shapenet":
        base, gt, delimiter = root / "pcd" / cat, "GT", ","
    else:
        base, gt, delimiter = root / cat, "gt", " "
    path = base / role / f"{name}.pcd"
    write_pcd(path, scan)
    if scan.label == 1:
        (base / gt).mkdir(parents=True, exist_ok=True)
        rows = np.column_stack([scan.points, scan.labels])
        np.savetxt(base / gt / f"{name}.txt", rows, fmt=["%.6f", "%.6f", "%.6f", "%d"], delimiter=delimiter)
    return path


def planted_record(scan: Scan) -> dict:
    """What the manifest keeps of a test scan's planted defect: its kind and, for the kinds that move the
    surface, its signed height in scan units (the truth a measured max_deviation is checked against)."""
    return {"kind": scan.defect_type or "good", "height": scan.meta.get("defect_height")}


def _names(layout: str, cat: str, role: str, kind: str, k: int, serial: int) -> str:
    if layout == "anomaly-shapenet":
        if role == "train":
            return f"{cat}_template{k}"
        return f"{cat}_{'positive' if kind == 'good' else kind}{k}"
    if role == "train":
        return f"{k}_template"
    return f"{serial}_{kind}"


def _write_mvtec(
    root: Path,
    cat: str,
    sources: Path,
    rng: np.random.Generator,
    plan: list,
    train: int,
    points: int,
    size: int,
    acquisition: Acquisition,
    place,
    record: dict,
) -> None:
    """MVTec 3D-AD layout: <cat>/{train,validation}/good and <cat>/test/<type>, xyz tiff + rgb + gt png."""
    import tifffile
    from PIL import Image

    from ad3d.synth.organised import Projector, shaded_colours

    dense = max(points, 25 * size * size)  # enough surface samples that every pixel on the part sees one
    draw = lambda: _draw(sources, dense, int(rng.integers(2**31)))  # noqa: E731
    template = draw()
    camera = Projector(template.points, size)
    base = rng.uniform(120, 230, 3)

    def save(split: str, kind: str, k: int, scan: Scan, colors: np.ndarray) -> None:
        xyz, rgb, mask = camera.project(acquisition.finish(scan.replace(colors=colors), rng), colors)
        folder = root / cat / split / kind
        for sub in ("xyz", "rgb") + (("gt",) if split == "test" else ()):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / "xyz" / f"{k:03d}.tiff", xyz, photometric="rgb")
        if split == "test":
            record[f"{cat}/test/{kind}/xyz/{k:03d}.tiff"] = planted_record(scan)
        Image.fromarray(rgb).save(folder / "rgb" / f"{k:03d}.png")
        if split == "test":
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / "gt" / f"{k:03d}.png")

    validation = max(1, train // 4)
    for split, count in (("train", train), ("validation", validation)):
        for k in range(count):
            scan = draw()
            save(split, "good", k, scan, shaded_colours(scan, base))
    for kind, k in plan:
        scan = draw()
        colors = shaded_colours(scan, base)
        if kind == "good":
            save("test", "good", k, scan, colors)
            continue
        for _ in range(30):  # re-plant until the defect faces the camera: >= 0.5 % of the part's pixels
            bad = place(scan.replace(colors=colors), kind, rng)
            xyz, _, mask = camera.project(bad, bad.colors)
            if mask.sum() >= max(10, 0.005 * (xyz[..., 2] > 0).sum()):
                break
        save("test", kind, k, bad, bad.colors)


def make_dataset(
    sources: list[Path] | str | os.PathLike,
    layout: str,
    out: Path,
    *,
    points: int = 4096,
    train: int = 4,
    good: int = 4,
    per_defect: int = 2,
    defects: tuple[str, ...] | None = None,
    seed: int = 0,
    image_size: int = 128,
    acquisition: Acquisition | None = None,
    defect_size: tuple[float, float] = (0.01, 0.08),
    defect_height: tuple[float, float] | None = None,
    progress: bool = False,
) -> dict:
    """Write the dataset to `out` (which must not exist or be empty); return counts per category. sources:
    meshes or scans, one category each (a file or a folder: `source_files`).

    acquisition: pose, noise, point-count spread and partial views (None: the realistic defaults;
    Acquisition.ideal(): perfectly aligned, noise-free scans of exactly `points` points).

    The dataset is assembled in a temporary folder beside `out` and moved into place at the end, so a
    failure leaves nothing behind. Defects default to the five geometric kinds, plus colour
    contamination for the RGB-D layout (mvtec3d, organised scans of image_size x image_size pixels).
    defect_size: the share of a scan's points a defect covers; defect_height: heights and depths as a share
    of the part's size (see `plant`): (0.001, 0.008) with a small defect_size makes subtle defects.
    """
    from functools import partial

    from tqdm import tqdm

    acquisition = Acquisition() if acquisition is None else acquisition
    if not 0 < defect_size[0] <= defect_size[1] < 0.5:
        raise ConfigError(f"defect size {defect_size} must be shares of the points, 0 < low <= high < 0.5")
    if defect_height is not None and not 0 < defect_height[0] <= defect_height[1] < 1:
        raise ConfigError(f"defect height {defect_height} must be shares of the part's size, 0 < low <= high < 1")
    place = partial(plant, fraction=defect_size, height=defect_height)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synth layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    sources = sources if isinstance(sources, list) else source_files(sources)
    if not sources:
        raise ConfigError("no source meshes or scans given")
    if defects is None:
        defects = GEOMETRIC + (("contamination",) if layout == "mvtec3d" else ())
    unknown = set(defects) - set(DEFECTS)
    if unknown:
        raise ConfigError(f"unknown defect(s) {', '.join(sorted(unknown))}; expected {', '.join(DEFECTS)}")
    if "contamination" in defects and layout != "mvtec3d":
        raise ConfigError("colour contamination needs colour: use the mvtec3d layout")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output '{out}' already exists and is not empty; nothing was written")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
    summary, record = {}, {}
    try:
        for c, source in enumerate(tqdm(sources, desc="synth", unit="category", disable=not progress)):
            cat = category_name(source)
            if layout == "anomaly-shapenet" and not cat[-1].isdigit():
                cat += "0"  # Anomaly-ShapeNet categories end in a digit (vase0, cap3)
            rng = np.random.default_rng([seed, c])
            plan = [("good", k) for k in range(good)] + [(d, k) for d in defects for k in range(per_defect)]
            summary[cat] = {"train": train, "good": good, "anomalous": per_defect * len(defects)}
            if layout == "mvtec3d":
                _write_mvtec(staging, cat, source, rng, plan, train, points, image_size, acquisition, place, record)
                continue
            draw = lambda: _draw(source, acquisition.point_count(points, rng), int(rng.integers(2**31)))  # noqa: E731
            for k in range(train):
                scan = acquisition.finish(draw(), rng)
                _write(layout, staging, cat, "train", _names(layout, cat, "train", "", k, 0), scan)
            serial = 0
            for kind, k in plan:
                scan = draw() if kind == "good" else place(draw(), kind, rng)
                if layout == "real3d" and acquisition.partial:
                    scan = partial_view(scan, rng)
                scan = acquisition.finish(scan, rng)
                path = _write(layout, staging, cat, "test", _names(layout, cat, "test", kind, k, serial), scan)
                record[path.relative_to(staging).as_posix()] = planted_record(scan)
                serial += 1
        (staging / MANIFEST).write_text(json.dumps(record, indent=1))
        if out.exists():
            out.rmdir()
        os.chmod(staging, umask_mode(0o777))  # mkdtemp makes it 0700 whatever the umask
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary
