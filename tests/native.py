"""Writers of the benchmarks' exact native layouts, for tests: real shapes, planted defect labels."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

# the project's shared data sits beside the checkout (CI clones main with shared/ beside it)
SHARED = Path(os.environ.get("AD3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def mesh_points(name: str, n: int, seed: int = 0) -> np.ndarray:
    """n surface points of a shared real mesh (e.g. 'ycb/banana.obj')."""
    from ad3d.io import read_scan

    return read_scan(SHARED / "meshes" / name, sample=n, seed=seed).points.astype(np.float64)


def plant_bulge(points: np.ndarray, seed: int, fraction: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Push the `fraction` of points nearest a random centre outwards; return (points, 0/1 labels)."""
    rng = np.random.default_rng(seed)
    centre = points[rng.integers(len(points))]
    d = np.linalg.norm(points - centre, axis=1)
    labels = (d <= np.quantile(d, fraction)).astype(np.uint8)
    out = points.copy()
    direction = centre - points.mean(axis=0)
    out[labels == 1] += 0.05 * np.ptp(points, axis=0).max() * direction / np.linalg.norm(direction)
    return out, labels


def write_pcd(
    path: Path,
    points: np.ndarray,
    data: str = "binary",
    extra: dict | None = None,
    width: int | None = None,
    height: int = 1,
) -> None:
    """A PCD file as PCL writes it (x y z float32, then extra float32 fields)."""
    cols = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], **(extra or {})}
    n = len(points)
    width = n if width is None else width
    rec = np.empty(n, dtype=[(k, "<f4") for k in cols])
    for k, v in cols.items():
        rec[k] = v
    k = len(cols)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(cols)}\nSIZE {' '.join(['4'] * k)}\nTYPE {' '.join(['F'] * k)}\n"
        f"COUNT {' '.join(['1'] * k)}\nWIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\nDATA {data}\n"
    ).encode()
    if data == "ascii":
        body = "\n".join(" ".join(repr(float(v)) for v in row) for row in rec.tolist()).encode() + b"\n"
    elif data == "binary":
        body = rec.tobytes()
    else:
        import lzf

        raw = b"".join(np.ascontiguousarray(rec[name]).tobytes() for name in cols)
        packed = lzf.compress(raw, len(raw) + len(raw) // 16 + 64)  # room for incompressible data
        body = struct.pack("<II", len(packed), len(raw)) + packed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body)


def write_gt_txt(path: Path, points: np.ndarray, labels: np.ndarray, sep: str, shuffle_seed: int | None) -> None:
    rows = np.column_stack([points, labels])
    if shuffle_seed is not None:
        rows = rows[np.random.default_rng(shuffle_seed).permutation(len(rows))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(sep.join([f"{x:.6f}", f"{y:.6f}", f"{z:.6f}", str(int(lab))]) for x, y, z, lab in rows) + "\n"
    )


def make_real3d(
    root: Path, categories=("airplane", "duck"), shapes=("ycb/banana.obj", "ycb/mustard_bottle.obj")
) -> dict:
    """Real3D-AD layout: 2 prototypes (one *template*, one *prototype* name), 2 good + 2 defective tests."""
    counts = {}
    for c, (cat, shape) in enumerate(zip(categories, shapes)):
        base = root / cat
        write_pcd(base / "train" / "1_template.pcd", mesh_points(shape, 800, 1))
        write_pcd(base / "train" / "2_prototype.pcd", mesh_points(shape, 800, 2))
        for i, kind in enumerate(("good", "good", "bulge", "sink")):
            pts = mesh_points(shape, 600, 10 + i)
            name = f"{i}_{kind}"
            if kind == "good":
                write_pcd(base / "test" / f"{name}.pcd", pts, data="binary_compressed")
                continue
            pts, labels = plant_bulge(pts, seed=i + c)
            write_pcd(base / "test" / f"{name}.pcd", pts, data="binary_compressed")
            write_gt_txt(base / "gt" / f"{name}.txt", pts, labels, " ", None)
            counts[(cat, name)] = int(labels.sum())
    return counts


def make_anomaly_shapenet(
    root: Path, categories=("vase0", "cap0"), shapes=("ycb/tomato_soup_can.obj", "cad/round.stl"), v2: bool = True
) -> dict:
    """Anomaly-ShapeNet layout (v2: under pcd/): comma GT rows shuffled, a `crak` file, `positive` normals."""
    base_root = root / "pcd" if v2 else root
    counts = {}
    for c, (cat, shape) in enumerate(zip(categories, shapes)):
        base = base_root / cat
        for k in range(2):
            write_pcd(base / "train" / f"{cat}_template{k}.pcd", mesh_points(shape, 700, k))
        for i, kind in enumerate(("positive0", "positive1", "bulge0", "crak1")):
            pts = mesh_points(shape, 500, 20 + i)
            name = f"{cat}_{kind}"
            if kind.startswith("positive"):
                write_pcd(base / "test" / f"{name}.pcd", pts, data="ascii")
                continue
            pts, labels = plant_bulge(pts, seed=i + c)
            write_pcd(base / "test" / f"{name}.pcd", pts, data="ascii")
            write_gt_txt(base / "GT" / f"{name}.txt", pts, labels, ",", shuffle_seed=i)
            counts[(cat, name)] = int(labels.sum())
    return counts


def make_mvtec3d(root: Path, category: str = "cable_gland", size: int = 40) -> dict:
    """MVTec 3D-AD layout: xyz tiff (zeros = missing), rgb png, gt png with class ids 253-255."""
    import tifffile
    from PIL import Image

    counts = {}
    rng = np.random.default_rng(0)

    def frame(seed: int, defect: bool):
        v, u = np.mgrid[0:size, 0:size].astype(np.float32)
        xyz = np.stack([0.01 + u * 0.001, 0.01 + v * 0.001, 0.3 + 0.0001 * np.sin(u + seed)], axis=2).astype(np.float32)
        xyz[:3, :5] = 0.0  # missing measurements
        rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        gt = np.zeros((size, size), np.uint8)
        if defect:
            gt[10:14, 20:25] = 255
            gt[30:32, 5:8] = 253
            xyz[10:14, 20:25, 2] += 0.004
        return xyz, rgb, gt

    for split, kind, n in (("train", "good", 3), ("validation", "good", 1), ("test", "good", 2), ("test", "hole", 2)):
        folder = root / category / split / kind
        for i in range(n):
            xyz, rgb, gt = frame(i, kind != "good")
            (folder / "xyz").mkdir(parents=True, exist_ok=True)
            (folder / "rgb").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(folder / "xyz" / f"{i:03d}.tiff", xyz, photometric="rgb")
            Image.fromarray(rgb).save(folder / "rgb" / f"{i:03d}.png")
            if split == "test":
                (folder / "gt").mkdir(parents=True, exist_ok=True)
                Image.fromarray(gt).save(folder / "gt" / f"{i:03d}.png")
                counts[(kind, i)] = int(((gt > 0) & np.all(xyz != 0, axis=2)).sum())
    return counts


def official_vit_state(depth: int, dim: int, tokens: int, patch: int, dinov2: bool) -> dict:
    """A DINO (v1) / DINOv2 backbone checkpoint, key for key as the authors' `*_pretrain.pth` files
    (written from their naming, not from timm's modules)."""
    import torch

    g = torch.Generator().manual_seed(1)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    state = {
        "cls_token": t(1, 1, dim),
        "pos_embed": t(1, tokens, dim),
        "patch_embed.proj.weight": t(dim, 3, patch, patch),
        "patch_embed.proj.bias": t(dim),
        "norm.weight": 1 + t(dim),
        "norm.bias": t(dim),
    }
    if dinov2:
        state["mask_token"] = t(1, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + t(dim),
                b + "norm1.bias": t(dim),
                b + "attn.qkv.weight": t(3 * dim, dim),
                b + "attn.qkv.bias": t(3 * dim),
                b + "attn.proj.weight": t(dim, dim),
                b + "attn.proj.bias": t(dim),
                b + "norm2.weight": 1 + t(dim),
                b + "norm2.bias": t(dim),
                b + "mlp.fc1.weight": t(4 * dim, dim),
                b + "mlp.fc1.bias": t(4 * dim),
                b + "mlp.fc2.weight": t(dim, 4 * dim),
                b + "mlp.fc2.bias": t(dim),
            }
        )
        if dinov2:
            state.update({b + "ls1.gamma": t(dim), b + "ls2.gamma": t(dim)})
    return state
