"""Nominal-actual deviation with a learned tolerance: metrology's comparison against the part's nominal surface
(its CAD mesh, or one fused from the good training scans), scored against how much good parts vary place by
place. The idea of PASDF (ICCV 2025: a signed-distance field after pose alignment), measured in scan units.

The nominal surface is `nominal_points` oriented points (no more than a good scan holds), each with its
`smooth_k` nearest as its neighbourhood. Every scan is registered to it (ad3d.preprocess.align, then a trimmed
point-to-plane ICP onto it); every point gets its signed distance to the surface (outward positive, scan
units: the result's `deviations`, and each region's max_deviation); the deviation field is averaged over each
surface neighbourhood to beat sensor noise. The good scans give, per surface point, the mean deviation of good
parts and a tolerance band of TOLERANCE_SIGMAS standard deviations (never tighter than `tolerance`; the band
widens where a scan is sparser than the good ones were); a point's score is its neighbourhood's deviation from
that mean in band widths (1.0: at the edge of the learned tolerance). Missing material: surface that no scan
point covers where every good scan did (a hole, a cut, a broken edge) scores its reach along the surface in
band widths, on the surface around it; an uncovered patch larger than `max_missing` of the surface is taken as
out of the sensor's view, not as a defect. The surface scores are then averaged over the neighbourhoods `blur`
times (a defect's fading rim scores with it). Object score: the mean of the `top_k` highest surface scores.
Without good scans (a CAD reference and a `tolerance`), the band is the tolerance and the decision is fixed:
reject from score 1.0, any point beyond the tolerance. `device` is taken for one contract with the other detectors;
the surface queries (scipy k-d trees) run on the CPU whatever it says (a million points score in about 2 s).
"""

from __future__ import annotations

import warnings

import numpy as np

from ad3d.detectors.base import Detector
from ad3d.detectors.registry import register
from ad3d.errors import ConfigError
from ad3d.types import Scan

TOLERANCE_SIGMAS = 3.0  # the learned tolerance band: mean +- 3 standard deviations of good parts (process capability)
REFINE_POINTS = 50_000  # points of a scan the fine registration uses (evenly strided)
MISSING_SPACINGS = 2.5  # uncovered surface reaching further than this many of the scan's mean point spacings is
# missing material: by chance, a scan of N points leaves gaps of sqrt(ln N / pi) spacings (2.1 at a million)


@register
class Deviation(Detector):
    name = "deviation"
    PRESETS = {"cpu": {}}  # no paper preset: PASDF's release is a trained SDF network, this is its metrology form
    modalities = ("xyz",)
    _state_arrays = (
        "nominal_points_",
        "nominal_normals_",
        "neighbours_",
        "offset_",
        "band_",
        "coverage_",
        "gap_allowance_",
    )
    cheap_refit = True

    def __init__(
        self,
        reference: str | None = None,
        tolerance: float | None = None,
        nominal_points: int = 50000,
        smooth_k: int = 8,
        max_missing: float = 0.2,
        blur: int = 4,
        top_k: int = 10,
        align: bool = True,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._store_params(locals())
        self.nominal_points_ = self.nominal_normals_ = self.neighbours_ = None
        self.offset_ = self.band_ = self.coverage_ = self.gap_allowance_ = None

    def check_params(self) -> None:
        checks = {
            "tolerance": self.tolerance is None or self.tolerance > 0,
            "nominal_points": self.nominal_points >= 100,
            "smooth_k": self.smooth_k >= 2,
            "max_missing": 0 <= self.max_missing <= 1,
            "blur": self.blur >= 0,
            "top_k": self.top_k >= 1,
        }
        self._require(checks)

    def fits_without_scans(self) -> bool:
        """A CAD reference and a typed tolerance are enough to measure against: no good scans needed."""
        return self.reference is not None and self.tolerance is not None

    # --- the nominal surface ------------------------------------------------------------------------
    def nominal(self):
        from ad3d.nominal import Nominal

        if getattr(self, "_nominal", None) is None or self._nominal.points is not self.nominal_points_:
            self._nominal = Nominal(self.nominal_points_, self.nominal_normals_, self.neighbours_)
        return self._nominal

    def _keep_nominal(self, nominal) -> None:
        self.nominal_points_, self.nominal_normals_, self.neighbours_ = (
            nominal.points,
            nominal.normals,
            nominal.neighbours,
        )
        self._nominal = nominal

    def reference_path(self) -> str:
        """The reference mesh's path, `{category}` filled in from the training scans' category."""
        if "{category}" in self.reference and not self.category_:
            raise ConfigError(f"reference '{self.reference}' names {{category}}, but the scans have no category")
        return self.reference.replace("{category}", self.category_ or "")

    def _fit_reference(self, scans: list[Scan]) -> list[Scan]:
        """The nominal surface from the CAD mesh (scans registered to it), or from the scans (registered to
        the first, then fused)."""
        if self.reference is None:
            if not scans:
                raise ConfigError("deviation: fit needs normal scans, or a reference mesh and a tolerance")
            self.nominal_points_ = None  # coarse registration first: there is no surface to refine onto yet
            aligned = super()._fit_reference(scans)
            for _ in range(2 if self.align else 1):  # fuse, register finely onto the fused surface, fuse again
                self._fuse(aligned)
                aligned = [self._refined(s)[0] for s in aligned] if self.align else aligned
            return aligned
        from ad3d.io import load_trimesh
        from ad3d.nominal import check_reference, check_units, from_mesh
        from ad3d.preprocess import reference_cloud

        path = self.reference_path()
        mesh = check_reference(load_trimesh(path), path)
        size = float(np.linalg.norm(mesh.extents))
        if scans:
            check_units(size, self.train_diag_, path)
        else:
            self.train_diag_ = size
        self._keep_nominal(from_mesh(mesh, self._surface_size(scans), self.smooth_k, self.seed))
        self.reference_ = reference_cloud(self.nominal_points_) if self.align else None
        return [self.aligned(s)[0] for s in scans]

    def _fuse(self, scans: list[Scan]) -> None:
        from ad3d.nominal import fuse

        normals = [s.normals for s in scans] if all(s.normals is not None for s in scans) else None
        count = self._surface_size(scans)
        self._keep_nominal(fuse([s.points for s in scans], normals, count, self.smooth_k, self.seed))

    def _surface_size(self, scans: list[Scan]) -> int:
        """Surface points: nominal_points, but no more than twice what a good scan holds (median), so that every
        surface neighbourhood averages at least smooth_k / 2 points of each scan."""
        return min(self.nominal_points, 2 * int(np.median([len(s) for s in scans]))) if scans else self.nominal_points

    def aligned(self, scan: Scan):
        """The scan registered to the nominal surface: the coarse registration of every aligning detector,
        then a trimmed point-to-plane ICP onto the surface itself (what a measurement in scan units needs)."""
        moved, found = super().aligned(scan)
        if found is None or self.nominal_points_ is None:
            return moved, found
        return self._refined(moved, found)

    def _refined(self, scan: Scan, found=None):
        from dataclasses import replace

        from ad3d.nominal import refine_pose

        stride = max(1, len(scan) // REFINE_POINTS)
        fine = refine_pose(scan.points[::stride].astype(np.float64), self.nominal(), np.eye(4))
        points = scan.points.astype(np.float64) @ fine[:3, :3].T + fine[:3, 3]
        normals = None if scan.normals is None else scan.normals.astype(np.float64) @ fine[:3, :3].T
        if found is not None:
            found = replace(found, transform=fine @ found.transform)
        return scan.replace(points=points, normals=normals), found

    # --- learning the tolerance ---------------------------------------------------------------------
    def _fit(self, scans: list[Scan], progress: bool) -> None:
        from tqdm import tqdm

        nominal = self.nominal()
        fields = [self._field(s)[:3] for s in tqdm(scans, desc="deviation fit", disable=not progress, leave=False)]
        m = len(nominal.points)
        offset, band, self.coverage_, self.gap_allowance_ = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
        if fields:
            means = np.stack([f[0] for f in fields])
            self.coverage_ = np.mean([f[1] for f in fields], 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # surface no good scan reached: mean and spread 0
                offset = np.nan_to_num(np.nanmean(means, 0))
                spread = np.nan_to_num(np.nanstd(means, 0, ddof=1)) if len(means) > 1 else np.zeros(m)
            band = TOLERANCE_SIGMAS * np.sqrt(nominal.average(spread**2))
            band = np.maximum(band, 0.5 * float(np.median(band)))  # no location tighter than half the typical
            self.gap_allowance_ = np.max(np.stack([f[2] for f in fields]), 0)
        floor = self.tolerance or 0.0
        if band.max(initial=0) <= 0 and floor <= 0:
            raise ConfigError(
                "deviation: the good scans do not vary at all (identical scans?); give a tolerance "
                "(--param tolerance=...) in scan units"
            )
        self.offset_, self.band_ = offset, np.maximum(band, floor)
        if not fields:  # no good scans to calibrate on: the typed tolerance is the decision
            self.threshold_ = self.point_threshold_ = 1.0
            self.calibration_ = {"scans": 0, "method": f"the given tolerance ({self.tolerance:g} scan units)"}

    def _field(self, scan: Scan) -> tuple[np.ndarray, ...]:
        """Per surface point: the scan's averaged deviation (NaN where uncovered), how many points it averages
        (per neighbour), and the reach of uncovered surface from covered surface; per scan point: its nearest
        surface point and its own signed distance."""
        nominal = self.nominal()
        nearest, distance = nominal.signed_distance(scan.points)
        means, counts = nominal.local_means(nearest, distance)
        return means, counts, nominal.gaps(counts > 0), nearest, distance

    # --- scoring ----------------------------------------------------------------------------------
    def surface_scores(
        self, means: np.ndarray, counts: np.ndarray, gaps: np.ndarray, scan_spacing: float
    ) -> np.ndarray:
        """Per surface point: deviation from good parts' mean in tolerance bands, or the reach of missing
        material beyond what good scans left uncovered, in bands, on the surface around it. Where the scan
        averages fewer points than the good scans did, the band widens as their noise does (1 / sqrt(count)).
        A gap counts as missing material from MISSING_SPACINGS of the scan's mean point spacings."""
        from scipy.spatial import cKDTree

        nominal = self.nominal()
        sparse = np.sqrt(np.maximum(self.coverage_ / np.maximum(counts, 1e-12), 1.0))
        deviation = np.nan_to_num(np.abs(means - self.offset_) / (self.band_ * sparse))
        excess = np.maximum(np.nan_to_num(gaps, posinf=0.0) - self.gap_allowance_, 0.0)  # inf: no overlap at all
        missing = np.zeros_like(excess)
        labels = nominal.components(excess > 0)
        for label in np.unique(labels[labels >= 0]):
            patch = np.flatnonzero(labels == label)
            reach = float(excess[patch].max())
            if reach <= MISSING_SPACINGS * scan_spacing or len(patch) > self.max_missing * len(labels):
                continue  # sampling, or out of the sensor's view: not missing material
            near = cKDTree(nominal.points[patch]).query(nominal.points, distance_upper_bound=reach / 2)[0]
            halo = np.isfinite(near)  # the rim around missing material: half as wide as it reaches
            missing[halo] = np.maximum(missing[halo], reach / float(np.median(self.band_[patch])))
        return np.maximum(deviation, missing)

    def _score(self, scan: Scan) -> tuple[np.ndarray, float, np.ndarray]:
        means, counts, gaps, nearest, distance = self._field(scan)
        nominal = self.nominal()
        surface = self.surface_scores(means, counts, gaps, np.sqrt(nominal.area / len(scan)))
        for _ in range(self.blur):
            surface = nominal.average(surface)
        top = np.sort(surface)[-min(self.top_k, len(surface)) :]
        return surface[nearest].astype(np.float32), float(top.mean()), distance.astype(np.float32)
