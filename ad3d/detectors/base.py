"""The Detector protocol, after scikit-learn's estimators.

Parameters live in __init__ verbatim; learned state sits in attributes ending in `_`. Saving and
loading are in model_file, the name table in registry, shared scoring pieces in scoring.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np

from ad3d.detectors.regions import extract_regions
from ad3d.detectors.registry import check_param_names, param_names
from ad3d.errors import ConfigError, ScanFormatError, ScoringError
from ad3d.types import AnomalyResult, Scan, diagonal

MIN_POINTS = 10  # fewer cannot describe a surface: a neighbourhood, a normal, a descriptor
MAX_COORDINATE = 1e15  # beyond any scanner's range in any unit; squared float32 distances overflow near 1e19


def check_geometry(scan: Scan) -> None:
    """Refuse a scan no detector can score: not a Scan at all, all points at one place (nothing to compare),
    fewer than MIN_POINTS points, or a coordinate so large that distances overflow (a corrupt point), rather than
    give it a meaningless score."""
    if not isinstance(scan, Scan):
        raise ConfigError(
            f"expected a Scan (ad3d.io.read_scan(path), or Scan(points=array)), got {type(scan).__name__}"
        )
    where = f"'{scan.path}'" if scan.path else "the scan"
    if len(scan) and float(np.abs(scan.points).max()) > MAX_COORDINATE:
        raise ScanFormatError(
            f"{where} has a coordinate of {float(np.abs(scan.points).max()):.3g}: beyond any scanner's range "
            f"(a corrupt point?); remove it or rescale the scan"
        )
    if len(scan) and not np.ptp(scan.points, axis=0).any():
        raise ScanFormatError(f"{where}: all {len(scan)} points lie at one place; there is no surface to score")
    if len(scan) < MIN_POINTS:
        raise ScanFormatError(
            f"{where} has {len(scan)} point{'s' * (len(scan) != 1)}: at least {MIN_POINTS} are needed to describe "
            "a surface (an empty or cut-short scan?)"
        )


def _checked_rates(
    fpr: float = 0.01, review_fpr: float | None = 0.05, point_fpr: float = 0.005, point_review_fpr: float | None = 0.02
) -> dict:
    """The calibration's false-reject rates, each checked to lie in (0, 1) (a review rate None or 0: no review)."""
    rates = {"fpr": fpr, "review_fpr": review_fpr, "point_fpr": point_fpr, "point_review_fpr": point_review_fpr}
    for name, value in rates.items():
        if (value or "review" not in name) and not 0 < (value or 0) < 1:
            raise ConfigError(f"{name} must lie in (0, 1), got {value}")
    return rates


def scan_bound(scores: np.ndarray, rate: float) -> float:
    """The score a new normal scan exceeds with probability `rate`, from normal scans' scores: their empirical
    (1 - rate) quantile when they are enough for it (at least 1 / rate), else the normal-theory prediction
    bound mean + t(1 - rate, n - 1) s sqrt(1 + 1 / n) (Student's t): a handful of scans gives a wide bound,
    not the largest score seen. One scan: its score."""
    n = len(scores)
    if n >= np.ceil(1 / rate) or n < 2:
        return float(np.quantile(scores, 1 - rate, method="higher"))
    from scipy.stats import t

    spread = float(np.std(scores, ddof=1)) * np.sqrt(1 + 1 / n)
    return float(np.mean(scores) + t.ppf(1 - rate, n - 1) * spread)


def as_tuple(value) -> tuple:
    """One value or several (`modalities="rgb"` or `("rgb", "xyz")`; `--param radii=0.05,0.1`) as a tuple:
    parameters are stored as passed, and read through this where a sequence is meant."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _scan_list(scans, what: str) -> list[Scan]:
    """`scans` as a list, refusing one Scan, an array or None where several scans are expected."""
    if scans is None or isinstance(scans, (Scan, np.ndarray, str)):
        raise ConfigError(f"{what} takes a list of Scans, got {type(scans).__name__}")
    return list(scans)


@contextmanager
def deterministic_kernels(device: str) -> Iterator[None]:
    """On a GPU, PyTorch's deterministic kernels while a detector fits or scores (atomic-free index
    backward passes among them), so that a seed gives the same bits twice, as on the CPU; the caller's
    setting is restored after. An op with no deterministic kernel warns rather than fails."""
    if not str(device).startswith(("cuda", "auto")):
        yield
        return
    import torch

    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


class Detector:
    """Base class: subclasses define __init__ (params only), _fit(scans), and _score(scan) (one-class)
    or _score_batch(scans) (zero-shot)."""

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ("xyz",)  # what it reads: "xyz", and "rgb" for colour
    learning_type: ClassVar[str] = "one-class"  # or "zero-shot" (anomalib's names): scores sets of scans
    _state_arrays: ClassVar[tuple[str, ...]] = ()  # learned numpy arrays saved as tensors
    _state_scalars: ClassVar[tuple[str, ...]] = ()  # learned JSON-able values

    threshold_: float | None = None
    review_threshold_: float | None = None
    point_threshold_: float | None = None
    point_review_threshold_: float | None = None
    category_: str | None = None
    train_diag_: float | None = None
    calibration_: dict | None = None  # what the thresholds rest on: {"scans": N, "method": ...}
    cheap_refit: ClassVar[bool] = False  # fits in seconds: calibration may refit per fold (calibrate_out_of_fold)
    reference_: np.ndarray | None = None  # the part's reference cloud, for detectors with align=True

    # --- parameters -------------------------------------------------------------------------
    def _store_params(self, init_locals: dict) -> None:
        """Keep every __init__ argument verbatim as an attribute (scikit-learn's rule), in one line."""
        for name in param_names(type(self)):
            setattr(self, name, init_locals[name])

    def _require(self, checks: dict[str, bool]) -> None:
        """A ConfigError naming the first parameter whose value failed its check (for check_params)."""
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{self.name} {name}={getattr(self, name)!r} is out of range")

    @property
    def reads(self) -> tuple[str, ...]:
        """The modalities this detector reads, as a tuple whatever form `modalities` was given in."""
        return as_tuple(self.modalities)

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in param_names(type(self))}

    def set_params(self, **params) -> Detector:
        """Change parameters (unknown names are a ConfigError); learned state is kept until the next fit."""
        check_param_names(type(self), params)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def clone(self) -> Detector:
        """A new, unfitted detector with the same parameters (scikit-learn's `clone`)."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --- lifecycle ----------------------------------------------------------------------------
    def fit(self, scans: Iterable[Scan], progress: bool = False) -> Detector:
        """Learn from normal scans only; returns self. A zero-shot detector only keeps them as an
        optional reference pool (none is allowed: it then scores sets of scans with score_many)."""
        scans = _scan_list(scans, "fit")
        if not scans and self.learning_type != "zero-shot" and not self.fits_without_scans():
            raise ConfigError(f"{self.name}: fit needs at least one normal scan")
        self.check_params()
        for scan in scans:
            check_geometry(scan)
            self.check_modalities(scan)
        categories = {s.category for s in scans} - {None}
        self.category_ = categories.pop() if len(categories) == 1 else None
        self.threshold_ = self.review_threshold_ = self.point_threshold_ = self.point_review_threshold_ = None
        self.calibration_ = None
        self.train_diag_ = float(np.median([diagonal(s.points) for s in scans])) if scans else None
        with self._kernels():
            self._fit(self._fit_reference(scans), progress)
        return self

    def _kernels(self):
        """The context fit and score run in: deterministic kernels on this detector's device."""
        return deterministic_kernels(getattr(self, "device", "cpu"))

    def fits_without_scans(self) -> bool:
        """Whether fit([]) can learn what scoring needs (a detector measuring against a given reference)."""
        return False

    def check_modalities(self, scan: Scan) -> None:
        """Refuse a scan that lacks what this detector reads (colour for an 'rgb' detector)."""
        if "rgb" in self.reads and scan.image is None and scan.colors is None:
            raise ConfigError(
                f"{self.name} reads colour and geometry (modalities {', '.join(self.reads)}), "
                f"but '{scan.path or 'the scan'}' has no image and no point colours"
            )

    # --- alignment to the part's reference ------------------------------------------------------
    def _fit_reference(self, scans: list[Scan]) -> list[Scan]:
        """With the `align` parameter on, the first training scan becomes the part's reference and
        every training scan is registered to it; else the scans as they are."""
        from ad3d.preprocess import reference_cloud

        self.reference_ = reference_cloud(scans[0].points) if getattr(self, "align", False) and scans else None
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

    def fingerprints(self) -> list[dict]:
        """The pretrained backbones this detector reads, as {backbone, sha256, ...}: a model file stores
        these, never the weights, and loading checks the weights found then are the same."""
        return []

    def check_params(self) -> None:
        """Raise ConfigError for parameter values this detector cannot use (run by fit and by load)."""

    def check_scale(self, scan: Scan, tolerance: float = 3.0) -> None:
        """Raise if the scan is far larger or smaller than the training parts (wrong model or units)."""
        if not self.train_diag_:
            return
        ratio = diagonal(scan.points) / self.train_diag_
        if not 1 / tolerance <= ratio <= tolerance:
            what = f"category '{self.category_}'" if self.category_ else "its training parts"
            raise ConfigError(
                f"'{scan.path or 'scan'}' is {ratio:.2g}x the size of the parts this model was "
                f"trained on ({what}); wrong model, or other units?"
            )

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

    def _check_scan(self, scan: Scan, force: bool) -> None:
        check_geometry(scan)
        if len(scan) == 0:
            raise ConfigError(f"cannot score an empty scan{f' ({scan.path})' if scan.path else ''}")
        self.check_modalities(scan)
        if not force:
            self.check_scale(scan)

    def score(self, scan: Scan, *, force: bool = False) -> AnomalyResult:
        """Score every point of `scan` and the scan as a whole; decision and regions once calibrated.

        A scan more than 3x larger or smaller than the training parts is refused (another part, or
        other units?) unless force=True. A zero-shot detector scores it against its reference pool.
        """
        self._check_fitted()
        self._check_scan(scan, force)
        start = time.perf_counter()
        moved, alignment = self.aligned(scan)
        timings = {"align_s": time.perf_counter() - start} if alignment is not None else {}
        with self._kernels():
            scores, object_score, *deviations = (
                self._score_batch([moved])[0] if self.learning_type == "zero-shot" else self._score(moved)
            )
        timings["score_s"] = time.perf_counter() - start
        return self._result(scan, scores, object_score, alignment, timings, *deviations)

    def score_many(self, scans: Iterable[Scan], progress: bool = False, *, force: bool = False) -> list[AnomalyResult]:
        """Score several scans: one by one, or, for a zero-shot detector, together (each against the
        others and the reference pool), which is its primary use."""
        from tqdm import tqdm

        scans = _scan_list(scans, "score_many")
        if self.learning_type != "zero-shot":
            return [
                self.score(s, force=force)
                for s in tqdm(scans, desc=f"{self.name} score", disable=not progress, leave=False)
            ]
        for scan in scans:  # a zero-shot detector needs no fit: the scans score each other
            self._check_scan(scan, force)
        start = time.perf_counter()
        moved = [self.aligned(s) for s in scans]
        with self._kernels():
            scored = self._score_batch([m for m, _ in moved])
        timings = {"score_s": (time.perf_counter() - start) / max(1, len(scans))}
        judge = self if self.threshold_ is not None or len(scans) < 3 else self._judged_by_batch(scans, scored)
        return [
            judge._result(scan, scores, obj, alignment, dict(timings))
            for scan, (scores, obj), (_, alignment) in zip(scans, scored, moved)
        ]

    def _judged_by_batch(self, scans: list[Scan], scored: list, rates: dict | None = None) -> Detector:
        """A copy of this uncalibrated zero-shot detector with thresholds from the batch's own scores, most
        scans assumed good (MuSc's premise), at `calibrate`'s default rates: for scans the robust bound
        median + z(1 - rate) x 1.4826 MAD of the object scores, for points the quantiles of all the batch's
        point scores (plenty, and mostly normal). Not kept: the next batch has its own."""
        from scipy.stats import norm

        rates = _checked_rates(**(rates or {}))

        def bound(values: np.ndarray, rate: float) -> float:
            centre = float(np.median(values))
            spread = 1.4826 * float(np.median(np.abs(values - centre))) or float(np.std(values))
            return centre + float(norm.ppf(1 - rate)) * spread

        objects = np.array([obj for _, obj in scored], dtype=np.float64)
        points = np.concatenate(
            [s.reshape(-1)[scan.grid_index] if s.ndim == 2 else s for scan, (s, _) in zip(scans, scored)]
        ).astype(np.float64)
        judge = copy.copy(self)
        judge.threshold_ = bound(objects, rates["fpr"])
        judge.review_threshold_ = bound(objects, rates["review_fpr"]) if rates["review_fpr"] else None
        judge.point_threshold_ = float(np.quantile(points, 1 - rates["point_fpr"]))
        review = rates["point_review_fpr"]
        judge.point_review_threshold_ = float(np.quantile(points, 1 - review)) if review else None
        judge.calibration_ = {"scans": len(scans), "method": "the batch itself (median + z MAD)", "fpr": rates["fpr"]}
        return judge

    def _result(
        self,
        scan: Scan,
        scores: np.ndarray,
        object_score: float,
        alignment,
        timings: dict,
        deviations: np.ndarray | None = None,
    ) -> AnomalyResult:
        """The AnomalyResult of one scored scan. `scores` are per point, or an anomaly map on the organised
        grid (H, W) from which each point takes its pixel's value; `deviations`, from a detector that measures
        them, the signed distance of every point to the part's nominal surface (scan units)."""
        finite = np.isfinite(scores)
        if not finite.all() or not np.isfinite(object_score):
            raise ScoringError(
                f"{self.name} gave '{scan.path or 'the scan'}' a non-finite score (object {object_score}, "
                f"{int((~finite).sum())} of {scores.size} point scores): refused, not accepted"
            )
        image_scores = None
        if scores.ndim == 2:
            if scores.shape != scan.grid_shape:
                raise ConfigError(
                    f"{self.name} returned a {scores.shape} map for a scan whose grid is {scan.grid_shape}"
                )
            image_scores, scores = scores, scores.reshape(-1)[scan.grid_index]
        elif scan.is_organised:
            image_scores = scan.to_image(scores)
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
            regions = extract_regions(scan.points, scores, self.point_threshold_, deviations=deviations)
            uncertain = (
                self.point_review_threshold_ if self.point_review_threshold_ is not None else self.point_threshold_
            )
            point_decisions = (scores >= uncertain).astype(np.uint8) + (scores >= self.point_threshold_).astype(
                np.uint8
            )
            timings["regions_s"] = time.perf_counter() - started
        return AnomalyResult(
            point_scores=scores,
            object_score=object_score,
            threshold=self.threshold_,
            is_anomalous=is_anomalous,
            decision=decision,
            regions=regions,
            image_scores=image_scores,
            timings=timings,
            point_decisions=point_decisions,
            alignment=None if alignment is None else alignment.as_dict(),
            deviations=deviations,
        )

    def _score(self, scan: Scan) -> tuple:
        """One-class detectors: (point scores or an (H, W) map, object score) of one scan; a detector that
        measures adds a third item, each point's signed deviation from the nominal surface (scan units)."""
        raise NotImplementedError

    def _score_batch(self, scans: list[Scan]) -> list[tuple[np.ndarray, float]]:
        """Zero-shot detectors: each scan scored against the others and the reference pool."""
        raise NotImplementedError

    def calibrate(
        self,
        normal_scans: Iterable[Scan],
        fpr: float = 0.01,
        review_fpr: float | None = 0.05,
        point_fpr: float = 0.005,
        point_review_fpr: float | None = 0.02,
    ) -> Detector:
        """The three-way decision (MC4AD's HQC, for every detector) from held-out normal scans only.

        Scans: reject above the (1 - fpr) quantile of the normal object scores, review between that and
        the (1 - review_fpr) quantile, accept below. Points: defective above the (1 - point_fpr) quantile
        of the normal point scores (these form the regions), uncertain above the (1 - point_review_fpr)
        quantile, normal below. A review rate not above its reject rate (or None) gives a two-way split.
        """
        rates = _checked_rates(fpr=fpr, review_fpr=review_fpr, point_fpr=point_fpr, point_review_fpr=point_review_fpr)
        results = self.score_many(normal_scans)
        if not results:
            raise ConfigError("calibrate needs at least one normal scan")
        self._set_thresholds(results, **rates)
        self.calibration_ = {"scans": len(results), "method": "held-out normal scans", "fpr": fpr}
        return self

    def calibrate_out_of_fold(self, normal_scans: Iterable[Scan], folds: int = 5, **rates) -> Detector:
        """The thresholds of `calibrate`, from out-of-fold scores: the normal scans (the training scans may
        be among them) split into `folds` folds (one scan each when fewer), each fold scored by a copy of
        this detector fitted on the other folds. For a line with 2-8 good scans and a detector that fits in
        seconds: every scan counts, and no score comes from a model that saw its scan. The fitted model is
        left as it is. `rates` as in `calibrate`."""
        self._check_fitted()
        scans, rates = list(normal_scans), _checked_rates(**rates)
        if len(scans) < 2:
            raise ConfigError(f"out-of-fold calibration needs at least 2 normal scans, got {len(scans)}")
        k = min(folds, len(scans))
        results = []
        for fold in range(k):
            rest = [s for i, s in enumerate(scans) if i % k != fold]
            results += self.clone().fit(rest).score_many(scans[fold::k])
        self._set_thresholds(results, **rates)
        self.calibration_ = {"scans": len(scans), "method": f"out-of-fold over {k} folds", "fpr": rates["fpr"]}
        return self

    def _set_thresholds(
        self, results: list[AnomalyResult], fpr: float, review_fpr: float | None, point_fpr: float, point_review_fpr
    ) -> None:
        """The three-way thresholds from scores of normal scans (see `calibrate`)."""
        objects = np.array([r.object_score for r in results])
        points = np.concatenate([r.point_scores for r in results])
        self.threshold_ = scan_bound(objects, fpr)
        self.review_threshold_ = scan_bound(objects, review_fpr) if review_fpr and review_fpr > fpr else None
        self.point_threshold_ = float(np.quantile(points, 1 - point_fpr, method="higher"))
        self.point_review_threshold_ = (
            float(np.quantile(points, 1 - point_review_fpr, method="higher"))
            if point_review_fpr and point_review_fpr > point_fpr
            else None
        )

    def thresholds(self) -> dict[str, float | None]:
        """The calibrated three-way thresholds (None where uncalibrated)."""
        return {
            "reject": self.threshold_,
            "review": self.review_threshold_,
            "point": self.point_threshold_,
            "point_review": self.point_review_threshold_,
        }

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model as one safetensors file (arrays + JSON header); atomically."""
        from ad3d.detectors import model_file

        self._check_fitted()
        model_file.save(self, path)
