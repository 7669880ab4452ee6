"""Self-supervised Point-MAE pretraining on any folder of scans or meshes: mask 60 % of each cloud's
groups, reconstruct their points from the visible ones, minimise the Chamfer distance (ad3d.ops).
Users in industry have many unlabelled normal scans and no ShapeNet checkpoint: this is how they get a
3D backbone. The weights file is safetensors in the released key layout, the architecture in its header.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ad3d.errors import ConfigError

PRESETS = {  # "paper": the released ShapeNet run (300 epochs of 52k shapes, GPU); "cpu": minutes on 2 cores
    "paper": {"config": {}, "points": 1024, "iterations": 120000, "batch": 128, "lr": 1e-3},
    "cpu": {
        "config": {
            "trans_dim": 192,
            "depth": 6,
            "num_heads": 3,
            "encoder_dims": 192,
            "decoder_depth": 2,
            "decoder_num_heads": 3,
        },
        "points": 1024,
        "iterations": 800,
        "batch": 8,
        "lr": 1e-3,
    },
}


def training_clouds(folder: Path, points: int, per_source: int, seed: int) -> list[np.ndarray]:
    """`per_source` clouds of `points` points from every scan or mesh under `folder` (meshes resampled
    each time, scans subsampled at random), each centred and scaled into the unit sphere."""
    from ad3d.io import read_scan
    from ad3d.synth.dataset import MESH_SUFFIXES, source_files

    files = source_files(folder)
    rng, clouds = np.random.default_rng(seed), []
    for path in files:
        mesh = path.suffix.lower() in MESH_SUFFIXES
        for k in range(per_source):
            xyz = read_scan(path, sample=points, seed=seed * 1000 + k).points if mesh else read_scan(path).points
            if len(xyz) < points:
                continue
            xyz = xyz[rng.choice(len(xyz), points, replace=False)] if len(xyz) > points else xyz
            xyz = xyz - xyz.mean(0)
            clouds.append((xyz / (np.linalg.norm(xyz, axis=1).max() or 1.0)).astype(np.float32))
    if not clouds:
        raise ConfigError(f"no scan under '{folder}' has {points} points")
    return clouds


def pretrain_point_mae(
    folder: str | Path,
    out: str | Path,
    preset: str = "cpu",
    seed: int = 0,
    iterations: int | None = None,
    per_source: int = 8,
    progress: bool = True,
) -> dict:
    """Train a Point-MAE on the clouds of `folder` and write its weights to `out`; returns a summary
    (clouds, iterations, first and last loss, seconds)."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ad3d.io._common import atomic_output
    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    if preset not in PRESETS:
        raise ConfigError(f"point-mae has no preset {preset!r}; presets: {', '.join(PRESETS)}")
    setup = PRESETS[preset]
    steps = setup["iterations"] if iterations is None else int(iterations)
    if steps < 1:
        raise ConfigError(f"pretraining needs at least 1 iteration, got {iterations}; nothing was written")
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"write the weights to a .safetensors file (ad3d reads that), not '{out}'")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    clouds = torch.from_numpy(np.stack(training_clouds(Path(folder), setup["points"], per_source, seed)))
    config = PointMAEConfig(**setup["config"])
    model = PointMAE(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=setup["lr"], weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    losses, start = [], time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc="point-mae pretrain", disable=not progress, unit="step"):
        batch = clouds[torch.randint(len(clouds), (min(setup["batch"], len(clouds)),), generator=generator)]
        loss = model(scale_and_translate(batch, generator), mask_ratio=0.6, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(out) as tmp:
        save_file(state, str(tmp), metadata={"point_mae": json.dumps(config.as_dict()), "preset": preset})
    tail = max(1, steps // 20)
    return {
        "clouds": len(clouds),
        "iterations": steps,
        "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])),
        "seconds": time.perf_counter() - start,
        "out": str(out),
    }


def scale_and_translate(batch, generator):
    """The release's augmentation: each cloud scaled per axis by U(2/3, 3/2) and shifted by U(-0.2, 0.2)."""
    import torch

    b = batch.shape[0]
    scale = torch.empty(b, 1, 3).uniform_(2 / 3, 3 / 2, generator=generator)
    shift = torch.empty(b, 1, 3).uniform_(-0.2, 0.2, generator=generator)
    return batch * scale + shift
