"""A content-keyed cache for derived arrays (never written inside a dataset folder)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    """$AD3D_CACHE, else $XDG_CACHE_HOME/ad3d, else ~/.cache/ad3d."""
    env = os.environ.get("AD3D_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ad3d"


def content_key(files: list[str | os.PathLike], params: dict) -> str:
    """sha256 over the bytes of `files` and the JSON of `params`: a change to either is a new key."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:32]


def cached_array(kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Return the array stored under (kind, key), computing and storing it on a miss."""
    target = cache_dir() / kind / f"{key}.npy"
    if target.exists():
        try:
            return np.load(target, allow_pickle=False)
        except (ValueError, OSError):
            target.unlink(missing_ok=True)  # a torn write from an earlier run: recompute
    value = np.asarray(compute())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, value, allow_pickle=False)
    os.replace(tmp, target)
    return value
