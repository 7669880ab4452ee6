"""The model file: one safetensors file holding the learned arrays as tensors and a JSON header (format,
version, detector, params, scalar state, thresholds, a sha256 over header and arrays). Loading never
runs code: the header is read first and checked against its schema, then the arrays."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ad3d.detectors.registry import detector_class, param_names
from ad3d.errors import ConfigError, ModelFormatError

MODEL_FORMAT = "ad3d-model"
MODEL_VERSION = 2  # 2: the checksum covers the JSON header as well as the arrays
RENAMED = {
    "num_centres": "num_groups",
    "groups": "num_groups",
    "features": "point_features",
    "weights": "point_weights",
}
"""Parameter names of models saved before each concept had one name, and the name each has now."""
ADDED = {"simple3d": {"thin_share": 1.0, "spacing": "scan", "thinning": "grid", "fit_draws": 1}}
"""Parameters added after models were saved, per detector, with the value that computes what those models did
(their default would change an old model's scores: simple3d's descriptors saw every point under max_points, each
scan thinned to its own limit on a grid, and such a model holds no learned spacing; its bank had one sampling of each
training scan, which a refit would otherwise change)."""

Detector = Any  # an ad3d.detectors.base.Detector; not imported, so that base (which saves through here) and this
# module do not import each other


def save(det: Detector, path: str | Path) -> None:
    """Write a fitted detector as one safetensors file (arrays + JSON header); atomically."""
    from safetensors.numpy import save as to_bytes

    from ad3d.io._common import atomic_output

    tensors = det._export_state()
    if det.reference_ is not None:
        tensors["align.reference"] = det.reference_
    header = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "detector": det.name,
        "params": det.get_params(),
        "tuple_params": sorted(k for k, v in det.get_params().items() if isinstance(v, tuple)),  # JSON has lists
        "category": det.category_,
        "train_diag": det.train_diag_,
        "state": {a: getattr(det, a) for a in det._state_scalars},
        "thresholds": det.thresholds(),
        "calibration": det.calibration_,
        "backbones": det.fingerprints(),
    }
    header = json.loads(json.dumps(header))  # the exact values a reader will see (tuples become lists)
    header["sha256"] = _digest(tensors, header)
    with atomic_output(path) as tmp:
        tmp.write_bytes(to_bytes(tensors, metadata={"ad3d": json.dumps(header)}))


def _digest(tensors: dict[str, np.ndarray], header: dict) -> str:
    """sha256 over the header (canonical JSON, without its own checksum) and every array's name, type,
    shape and bytes: editing a threshold, a parameter or an array is caught on load."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        arr = tensors[key]
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load(path: str | Path) -> Detector:
    """Read a model saved by Detector.save; raise ModelFormatError for anything else or damaged."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"cannot load model '{path}': no such file")
    header = _read_header(path)
    if header.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"cannot load model '{path}': not an ad3d model file")
    if header.get("version") != MODEL_VERSION:
        raise ModelFormatError(
            f"cannot load model '{path}': model format version {header.get('version')}, "
            f"this ad3d reads version {MODEL_VERSION}"
        )
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelFormatError(f"cannot load model '{path}': damaged ({type(e).__name__}: {str(e)[:120]})") from None
    _check_header(path, header)
    if _digest(tensors, header) != header["sha256"]:
        raise ModelFormatError(
            f"cannot load model '{path}': the header or the arrays do not match their checksum "
            "(file modified or corrupt)"
        )
    for key, arr in tensors.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelFormatError(f"cannot load model '{path}': array '{key}' holds NaN or inf")
    try:
        cls = detector_class(header["detector"])
    except ConfigError:
        raise ModelFormatError(f"cannot load model '{path}': unknown detector {header['detector']!r}") from None
    try:
        tuples, names = set(header.get("tuple_params", ())), param_names(cls)
        params = {k if k in names else RENAMED.get(k, k): v for k, v in header["params"].items()}
        params = {**ADDED.get(cls.name, {}), **params}
        det = cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in params.items()})
        det.check_params()
    except (TypeError, ConfigError) as e:
        raise ModelFormatError(f"cannot load model '{path}': parameters do not fit {cls.name} ({e})") from None
    _check_backbones(path, det, header.get("backbones", []))
    try:
        det._import_state(tensors)
    except KeyError as e:
        raise ModelFormatError(f"cannot load model '{path}': missing arrays {e.args[0]}") from None
    except (ValueError, RuntimeError, ConfigError) as e:  # shapes that do not fit the network the params describe
        raise ModelFormatError(f"cannot load model '{path}': arrays do not fit {cls.name} ({str(e)[:160]})") from None
    det.reference_ = tensors.get("align.reference")
    if getattr(det, "align", False) and det.reference_ is None:
        raise ModelFormatError(f"cannot load model '{path}': it aligns scans but holds no reference cloud")
    for a in cls._state_scalars:
        setattr(det, a, header["state"].get(a))
    det.category_ = header["category"]
    det.train_diag_ = header["train_diag"]
    thresholds = header["thresholds"]
    det.threshold_, det.review_threshold_ = thresholds.get("reject"), thresholds.get("review")
    det.point_threshold_, det.point_review_threshold_ = thresholds.get("point"), thresholds.get("point_review")
    det.calibration_ = header.get("calibration")
    return det


MAX_HEADER_BYTES = 64 * 2**20


def _read_header(path: Path) -> dict:
    """The ad3d header of a safetensors file, read without reading the arrays: a large file that is
    not a model is refused after its first bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            raise ModelFormatError(
                f"cannot load model '{path}': not an ad3d model file or damaged (no safetensors header at its start)"
            )
        try:
            meta = json.loads(f.read(length)).get("__metadata__") or {}
            header = json.loads(meta["ad3d"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ModelFormatError(
                f"cannot load model '{path}': not an ad3d model file or damaged (its header is not ad3d's JSON)"
            ) from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"cannot load model '{path}': not an ad3d model file (header is not an object)")
    return header


def _check_backbones(path: Path, det: Detector, stored: list) -> None:
    """The weights a model was fitted with must be the ones found now (same sha256), or its features mean
    something else; the weights themselves are never in the model file."""
    from ad3d.errors import WeightsError

    if not stored:
        return
    try:
        found = det.fingerprints()
    except WeightsError as e:
        raise ModelFormatError(f"cannot load model '{path}': {e}") from None
    if [f.get("backbone") for f in stored] != [f.get("backbone") for f in found]:
        raise ModelFormatError(
            f"cannot load model '{path}': it was fitted on backbones {[f.get('backbone') for f in stored]}, "
            f"its parameters now describe {[f.get('backbone') for f in found]}"
        )
    for was, now in zip(stored, found):
        if was.get("sha256") != now.get("sha256"):
            raise ModelFormatError(
                f"cannot load model '{path}': it was fitted with {was.get('backbone')} weights of sha256 "
                f"{str(was.get('sha256'))[:16]}..., but the weights found now ('{now.get('file')}') "
                f"have {str(now.get('sha256'))[:16]}...: not the same weights"
            )


def _check_header(path: Path, header: dict) -> None:
    """The header's schema: every key present with its type, numbers finite, thresholds in order."""

    def bad(problem: str) -> ModelFormatError:
        return ModelFormatError(f"cannot load model '{path}': header {problem}")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)

    kinds = {"detector": str, "params": dict, "state": dict, "thresholds": dict, "sha256": str}
    if not isinstance(header.get("backbones", []), list):
        raise bad("'backbones' is not a list")
    tuples = header.get("tuple_params", [])
    if not (isinstance(tuples, list) and all(isinstance(k, str) for k in tuples)):
        raise bad("'tuple_params' is not a list of parameter names")
    calibration = header.get("calibration")
    if calibration is not None and not (isinstance(calibration, dict) and number(calibration.get("scans"))):
        raise bad("'calibration' is not a record of the scans the thresholds rest on")
    for key, kind in kinds.items():
        if not isinstance(header.get(key), kind):
            raise bad(f"'{key}' is missing or not a {kind.__name__}")
    if header.get("category") is not None and not isinstance(header["category"], str):
        raise bad("'category' is not text")
    if "category" not in header or "train_diag" not in header:
        raise bad("lacks 'category' or 'train_diag'")
    if header["train_diag"] is not None and not (number(header["train_diag"]) and header["train_diag"] > 0):
        raise bad(f"'train_diag' is {header['train_diag']!r}, not a positive number")
    t = header["thresholds"]
    names = ("reject", "review", "point", "point_review")
    if set(t) != set(names):
        raise bad(f"'thresholds' holds {sorted(t)}, expected {list(names)}")
    for name in names:
        if t[name] is not None and not number(t[name]):
            raise bad(f"threshold '{name}' is {t[name]!r}, not a finite number")
    for low, high in (("review", "reject"), ("point_review", "point")):
        if t[low] is not None and t[high] is not None and t[low] > t[high]:
            raise bad(f"threshold '{low}' ({t[low]}) lies above '{high}' ({t[high]})")
