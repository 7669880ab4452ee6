"""The Detector protocol (after scikit-learn's estimators), the registry, and the model file format.

Parameters live in __init__ verbatim; learned state sits in attributes ending in `_`. A model file is
one safetensors file: the learned arrays as tensors and a JSON header (format, version, detector,
params, scalar state, thresholds, a sha256 of the tensor bytes). Loading never runs code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np

from ad3d.detectors.regions import extract_regions
from ad3d.errors import ConfigError, ModelFormatError
from ad3d.types import AnomalyResult, Scan

MODEL_FORMAT = "ad3d-model"
MODEL_VERSION = 2  # 2: the checksum covers the JSON header as well as the arrays
_REGISTRY: dict[str, type[Detector]] = {}


def register(cls):
    """Class decorator: make a detector available to create() and load() under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create(name: str, **params) -> Detector:
    """A new, unfitted detector by registry name."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


def preset(name: str, preset_name: str) -> dict:
    """A detector's named parameter set (e.g. 'cpu', 'paper'); explicit parameters override it."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    presets = getattr(_REGISTRY[name], "PRESETS", {"default": {}})
    if preset_name not in presets:
        raise ConfigError(f"{name} has no preset {preset_name!r}; presets: {', '.join(presets)}")
    return dict(presets[preset_name])


def _load_builtin() -> None:
    import ad3d.detectors.mc4ad  # noqa: F401  (each registers itself)
    import ad3d.detectors.patchcore  # noqa: F401
    import ad3d.detectors.r3dad  # noqa: F401


def top_mean(scores: np.ndarray, fraction: float) -> float:
    """Mean of the highest `fraction` of the scores (at least one): a robust object score; 0 -> max."""
    if fraction <= 0:
        return float(np.max(scores))
    k = max(1, int(round(fraction * len(scores))))
    return float(np.mean(np.partition(scores, len(scores) - k)[-k:]))


class Detector:
    """Base class: subclasses define __init__ (params only), _fit(scans) and _score(scan)."""

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ("xyz",)
    _state_arrays: ClassVar[tuple[str, ...]] = ()  # learned numpy arrays saved as tensors
    _state_scalars: ClassVar[tuple[str, ...]] = ()  # learned JSON-able values

    threshold_: float | None = None
    review_threshold_: float | None = None
    point_threshold_: float | None = None
    point_review_threshold_: float | None = None
    category_: str | None = None
    train_diag_: float | None = None
    reference_: np.ndarray | None = None  # the part's reference cloud, for detectors with align=True

    # --- parameters -------------------------------------------------------------------------
    def get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --- lifecycle ----------------------------------------------------------------------------
    def fit(self, scans: Iterable[Scan], progress: bool = False) -> Detector:
        """Learn from normal scans only; returns self."""
        scans = list(scans)
        if not scans:
            raise ConfigError(f"{self.name}: fit needs at least one normal scan")
        self.check_params()
        categories = {s.category for s in scans} - {None}
        self.category_ = categories.pop() if len(categories) == 1 else None
        self.threshold_ = self.review_threshold_ = self.point_threshold_ = self.point_review_threshold_ = None
        self.train_diag_ = float(np.median([np.linalg.norm(np.ptp(s.points, axis=0)) for s in scans]))
        self._fit(self._fit_reference(scans), progress)
        return self

    # --- alignment to the part's reference ------------------------------------------------------
    def _fit_reference(self, scans: list[Scan]) -> list[Scan]:
        """With the `align` parameter on, the first training scan becomes the part's reference and
        every training scan is registered to it; else the scans as they are."""
        from ad3d.preprocess import reference_cloud

        self.reference_ = reference_cloud(scans[0].points) if getattr(self, "align", False) else None
        return [self.aligned(s)[0] for s in scans]

    def aligned(self, scan: Scan):
        """(the scan moved onto the part's reference, its Alignment), or (scan, None) without a reference.
        Point order is kept, so scores computed on the moved scan belong to the scan's own points."""
        if self.reference_ is None:
            return scan, None
        from ad3d.preprocess import align

        found = align(scan.points, self.reference_, seed=int(getattr(self, "seed", 0)))
        normals = None if scan.normals is None else found.rotate(scan.normals)
        return scan.replace(points=found.apply(scan.points), normals=normals), found

    def check_params(self) -> None:
        """Raise ConfigError for parameter values this detector cannot use (run by fit and by load)."""

    def check_scale(self, scan: Scan, tolerance: float = 3.0) -> None:
        """Raise if the scan is far larger or smaller than the training parts (wrong model or units)."""
        if not self.train_diag_:
            return
        ratio = float(np.linalg.norm(np.ptp(scan.points, axis=0))) / self.train_diag_
        if not 1 / tolerance <= ratio <= tolerance:
            what = f"category '{self.category_}'" if self.category_ else "its training parts"
            raise ConfigError(f"'{scan.path or 'scan'}' is {ratio:.2g}x the size of the parts this model was "
                              f"trained on ({what}); wrong model, or other units?")

    def _check_fitted(self) -> None:
        if not self._fitted():
            raise ConfigError(f"{self.name} detector is not fitted; call fit() or load a saved model")

    def n_learned(self) -> int:
        """Learned numbers stored in the model (network weights or memory-bank entries)."""
        return int(sum(np.size(getattr(self, a)) for a in self._state_arrays))

    def _fitted(self) -> bool:
        return all(getattr(self, a, None) is not None for a in self._state_arrays)

    def _export_state(self) -> dict[str, np.ndarray]:
        """The learned arrays to store, by name (network detectors override this)."""
        return {a: np.ascontiguousarray(getattr(self, a)) for a in self._state_arrays}

    def _import_state(self, tensors: dict[str, np.ndarray]) -> None:
        """Set the learned arrays read from a model file; raise KeyError naming any that are missing."""
        missing = set(self._state_arrays) - set(tensors)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        for a in self._state_arrays:
            setattr(self, a, tensors[a])

    def score(self, scan: Scan, *, force: bool = False) -> AnomalyResult:
        """Score every point of `scan` and the scan as a whole; decision and regions once calibrated.

        A scan more than 3x larger or smaller than the training parts is refused (another part, or
        other units?) unless force=True.
        """
        self._check_fitted()
        if len(scan) == 0:
            raise ConfigError(f"cannot score an empty scan{f' ({scan.path})' if scan.path else ''}")
        if not force:
            self.check_scale(scan)
        start = time.perf_counter()
        moved, alignment = self.aligned(scan)
        timings = {"align_s": time.perf_counter() - start} if alignment is not None else {}
        point_scores, object_score = self._score(moved)
        timings["score_s"] = time.perf_counter() - start
        decision = is_anomalous = None
        if self.threshold_ is not None:
            is_anomalous = object_score >= self.threshold_
            review = self.review_threshold_ if self.review_threshold_ is not None else self.threshold_
            decision = "reject" if is_anomalous else ("review" if object_score >= review else "accept")
            if alignment is not None and not alignment.ok and decision == "accept":
                decision = "review"  # a scan that did not register is never passed on its scores alone
        regions, point_decisions = [], None
        if self.point_threshold_ is not None:
            started = time.perf_counter()
            regions = extract_regions(scan.points, point_scores, self.point_threshold_)
            uncertain = self.point_review_threshold_ if self.point_review_threshold_ is not None else self.point_threshold_
            point_decisions = ((point_scores >= uncertain).astype(np.uint8)
                               + (point_scores >= self.point_threshold_).astype(np.uint8))
            timings["regions_s"] = time.perf_counter() - started
        image_scores = scan.to_image(point_scores) if scan.is_organised else None
        return AnomalyResult(point_scores=point_scores, object_score=object_score, threshold=self.threshold_,
                             is_anomalous=is_anomalous, decision=decision, regions=regions,
                             image_scores=image_scores, timings=timings, point_decisions=point_decisions,
                             alignment=None if alignment is None else alignment.as_dict())

    def score_many(self, scans: Iterable[Scan], progress: bool = False, *, force: bool = False) -> list[AnomalyResult]:
        from tqdm import tqdm

        scans = list(scans)
        return [self.score(s, force=force)
                for s in tqdm(scans, desc=f"{self.name} score", disable=not progress, leave=False)]

    def calibrate(self, normal_scans: Iterable[Scan], fpr: float = 0.01, review_fpr: float | None = 0.05,
                  point_fpr: float = 0.005, point_review_fpr: float | None = 0.02) -> Detector:
        """The three-way decision (MC4AD's HQC, for every detector) from held-out normal scans only.

        Scans: reject above the (1 - fpr) quantile of the normal object scores, review between that and
        the (1 - review_fpr) quantile, accept below. Points: defective above the (1 - point_fpr) quantile
        of the normal point scores (these form the regions), uncertain above the (1 - point_review_fpr)
        quantile, normal below. A review rate not above its reject rate (or None) gives a two-way split.
        """
        rates = (("fpr", fpr), ("point_fpr", point_fpr)) + ((("review_fpr", review_fpr),) if review_fpr else ()) \
            + ((("point_review_fpr", point_review_fpr),) if point_review_fpr else ())
        for name, value in rates:
            if not 0 < value < 1:
                raise ConfigError(f"{name} must lie in (0, 1), got {value}")
        results = self.score_many(normal_scans)
        if not results:
            raise ConfigError("calibrate needs at least one normal scan")
        objects = np.array([r.object_score for r in results])
        points = np.concatenate([r.point_scores for r in results])
        self.threshold_ = float(np.quantile(objects, 1 - fpr, method="higher"))
        self.review_threshold_ = (float(np.quantile(objects, 1 - review_fpr, method="higher"))
                                  if review_fpr and review_fpr > fpr else None)
        self.point_threshold_ = float(np.quantile(points, 1 - point_fpr, method="higher"))
        self.point_review_threshold_ = (float(np.quantile(points, 1 - point_review_fpr, method="higher"))
                                        if point_review_fpr and point_review_fpr > point_fpr else None)
        return self

    def thresholds(self) -> dict[str, float | None]:
        """The calibrated three-way thresholds (None where uncalibrated)."""
        return {"reject": self.threshold_, "review": self.review_threshold_, "point": self.point_threshold_,
                "point_review": self.point_review_threshold_}

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as one safetensors file (arrays + JSON header); atomically."""
        from safetensors.numpy import save

        from ad3d.io._common import atomic_output

        self._check_fitted()
        tensors = self._export_state()
        if self.reference_ is not None:
            tensors["align.reference"] = self.reference_
        header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "detector": self.name,
                  "params": self.get_params(), "category": self.category_, "train_diag": self.train_diag_,
                  "state": {a: getattr(self, a) for a in self._state_scalars},
                  "thresholds": self.thresholds()}
        header = json.loads(json.dumps(header))  # the exact values a reader will see (tuples become lists)
        header["sha256"] = _digest(tensors, header)
        with atomic_output(path) as tmp:
            tmp.write_bytes(save(tensors, metadata={"ad3d": json.dumps(header)}))


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
        raise ModelFormatError(f"cannot load model '{path}': model format version {header.get('version')}, "
                               f"this ad3d reads version {MODEL_VERSION}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelFormatError(f"cannot load model '{path}': damaged ({type(e).__name__}: {str(e)[:120]})") from None
    _check_header(path, header)
    if _digest(tensors, header) != header["sha256"]:
        raise ModelFormatError(f"cannot load model '{path}': the header or the arrays do not match their checksum "
                               "(file modified or corrupt)")
    for key, arr in tensors.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelFormatError(f"cannot load model '{path}': array '{key}' holds NaN or inf")
    _load_builtin()
    cls = _REGISTRY.get(header["detector"])
    if cls is None:
        raise ModelFormatError(f"cannot load model '{path}': unknown detector {header['detector']!r}")
    try:
        det = cls(**header["params"])
        det.check_params()
    except (TypeError, ConfigError) as e:
        raise ModelFormatError(f"cannot load model '{path}': parameters do not fit {cls.name} ({e})") from None
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
            raise ModelFormatError(f"cannot load model '{path}': not an ad3d model file or damaged "
                                   "(no safetensors header at its start)")
        try:
            meta = json.loads(f.read(length)).get("__metadata__") or {}
            header = json.loads(meta["ad3d"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ModelFormatError(f"cannot load model '{path}': not an ad3d model file or damaged "
                                   "(its header is not ad3d's JSON)") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"cannot load model '{path}': not an ad3d model file (header is not an object)")
    return header


def _check_header(path: Path, header: dict) -> None:
    """The header's schema: every key present with its type, numbers finite, thresholds in order."""
    def bad(problem: str) -> ModelFormatError:
        return ModelFormatError(f"cannot load model '{path}': header {problem}")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)

    kinds = {"detector": str, "params": dict, "state": dict, "thresholds": dict, "sha256": str}
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
