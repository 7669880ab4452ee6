"""What the network detectors share: a coordinate frame, seeded training with early stopping on
held-out normal scans, and the network's weights as the model file's tensors.

A subclass defines _build_net() (from its params), _batch(rng, scans, generator) -> loss tensor for
training and validation, and _score(scan). Weights are stored as `net.<state-dict key>` arrays.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ad3d.detectors.base import Detector
from ad3d.detectors.scoring import baseline_at, location_baseline
from ad3d.errors import ConfigError
from ad3d.ops import even_subset
from ad3d.types import Scan


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return torch.device(device)


JITTER_DEGREES = 2.0  # rotation="jitter": the pose spread left after alignment (< 0.3 deg measured), and more


def random_rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    """A 3x3 rotation: 'full' = three Euler angles uniform in +-180 deg (R3D-AD, PO3AD), 'z' = about z
    only, 'jitter' = up to JITTER_DEGREES about a random axis (aligned scans), 'none' = identity."""
    if mode == "none":
        return np.eye(3)
    if mode == "jitter":
        from ad3d.synth.acquisition import rotation_about

        return rotation_about(rng.normal(size=3), rng.uniform(-JITTER_DEGREES, JITTER_DEGREES))
    angles = rng.uniform(-np.pi, np.pi, 3) if mode == "full" else np.array([0.0, 0.0, rng.uniform(-np.pi, np.pi)])
    if mode not in ("full", "z"):
        raise ConfigError(f"rotation must be 'none', 'jitter', 'z' or 'full', got {mode!r}")
    out = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def jitter(points: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Noise augmentation: Gaussian noise of a sigma drawn in [0, sigma) for this sample (frame units)."""
    if sigma <= 0:
        return points
    return (points + rng.normal(scale=rng.uniform(0, sigma), size=points.shape)).astype(points.dtype)


class NeuralDetector(Detector):
    """Base of detectors whose learned state is one torch module `net_` plus a coordinate frame.

    The frame maps scans into the network's unit-sized coordinates: normalise='category' uses one centre
    and scale from the training scans (aligned parts: a defect never moves the frame); 'scan' centres
    each scan on its centroid and divides by its largest radius (PO3AD; parts in arbitrary poses).
    """

    _state_scalars = ("centre_", "scale_", "history_")
    net_: torch.nn.Module | None = None
    baseline_: np.ndarray | None = None  # normal raw score around each reference point (aligned scans)
    centre_: list[float] | None = None
    scale_: float | None = None
    history_: list | None = None  # [iteration, training loss, held-out loss] at each evaluation

    # --- frame ------------------------------------------------------------------------------
    def _fit_frame(self, scans: list[Scan]) -> None:
        if self.normalise not in ("category", "scan"):
            raise ConfigError(f"normalise must be 'category' or 'scan', got {self.normalise!r}")
        centres = [s.points.mean(0) for s in scans]
        self.centre_ = np.mean(centres, 0).tolist()
        self.scale_ = float(np.median([np.linalg.norm(s.points - c, axis=1).max() for s, c in zip(scans, centres)]))

    def to_frame(self, points: np.ndarray) -> tuple[np.ndarray, float]:
        """Points in the network's coordinates (float32) and the frame's scale (scan units per frame unit)."""
        if self.normalise == "scan":
            centred = points - points.mean(0)
            scale = max(float(np.linalg.norm(centred, axis=1).max()), 1e-12)
            return (centred / scale).astype(np.float32), scale
        return ((points - np.asarray(self.centre_)) / self.scale_).astype(np.float32), self.scale_

    # --- location baseline (aligned scans) -----------------------------------------------------
    def _reference_frame(self) -> np.ndarray | None:
        """The part's reference in the network frame (aligned, category-frame models only)."""
        if self.reference_ is None or self.normalise != "category":
            return None
        return self.to_frame(self.reference_)[0]

    def _fit_baseline(self, scans: list[Scan], size: int) -> None:
        """The normal raw score (`_raw_scores`) at each reference point, from even subsets of `size`
        points of the given normal scans (network frame); nothing without a reference."""
        ref = self._reference_frame()
        if ref is not None:
            subsets = [s.points[even_subset(s.points, size)] for s in scans]
            self.baseline_ = location_baseline(ref, [(p, self._raw_scores(p)) for p in subsets])

    def _less_baseline(self, points: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Raw scores less the normal score at each point's place (location_norm), else as they are."""
        ref = self._reference_frame()
        if not self.location_norm or self.baseline_ is None or ref is None:
            return raw
        return raw - baseline_at(ref, self.baseline_, points)

    def _raw_scores(self, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- training ---------------------------------------------------------------------------
    def _build_net(self) -> torch.nn.Module:
        raise NotImplementedError

    def _batch_loss(self, scans: list[Scan], rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _prepare(self, scans: list[Scan]) -> list[Scan]:
        """Training scans in the network frame (subclasses may add what they need, e.g. normals)."""
        return [
            s.replace(
                points=self.to_frame(s.points)[0], normals=None if s.normals is None else s.normals.astype(np.float32)
            )
            for s in scans
        ]

    def _fit(self, scans: list[Scan], progress: bool) -> None:
        """Adam on random batches; every `eval_every` iterations the loss on held-out normal scans (fixed
        draws) decides early stopping, and the best weights are kept. With fewer than 3 scans the
        held-out loss uses fixed draws from the training scans themselves."""
        from tqdm import tqdm

        for name in ("iterations", "batch_size", "eval_every", "val_batches", "num_points"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{self.name}: {name} must be at least 1, got {getattr(self, name)}")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.device_ = resolve_device(self.device)
        self._fit_frame(scans)
        prepared = self._prepare(scans)
        n_val = max(1, len(prepared) // 4) if len(prepared) >= 3 else 0
        train, val = (prepared[:-n_val], prepared[-n_val:]) if n_val else (prepared, prepared)
        self.net_ = self._build_net().to(self.device_)
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        decay_from = self.iterations // 2  # linear decay to lr/10 over the second half (R3D-AD's schedule shape)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda i: 1.0 if i < decay_from else 1.0 - 0.9 * (i - decay_from) / max(1, self.iterations - decay_from),
        )
        best, best_state, since_best, history = math.inf, None, 0, []
        bar = tqdm(range(1, self.iterations + 1), desc=f"{self.name} fit", disable=not progress, leave=False)
        for it in bar:
            self.net_.train()
            loss = self._batch_loss(train, rng)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net_.parameters(), 10.0)
            optimiser.step()
            schedule.step()
            if it % self.eval_every and it != self.iterations:
                continue
            val_loss = self._validation_loss(val)
            history.append([it, float(loss.detach()), val_loss])
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", val=f"{val_loss:.4f}")
            if val_loss < best:
                best, best_state, since_best = val_loss, copy.deepcopy(self.net_.state_dict()), 0
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.history_ = history
        self._finish(train, val)

    def _finish(self, train: list[Scan], val: list[Scan]) -> None:
        """Choices made after training, on the training and held-out normal scans (network frame);
        none by default."""

    @torch.no_grad()
    def _validation_loss(self, val: list[Scan]) -> float:
        """Mean loss over fixed draws (same seed every time) so that successive values compare."""
        self.net_.eval()
        state = torch.get_rng_state()
        torch.manual_seed(self.seed + 1)
        rng = np.random.default_rng(self.seed + 1)
        losses = [float(self._batch_loss(val, rng)) for _ in range(self.val_batches)]
        torch.set_rng_state(state)
        return float(np.mean(losses))

    # --- state --------------------------------------------------------------------------------
    def _fitted(self) -> bool:
        return self.net_ is not None

    def n_learned(self) -> int:
        """Trainable network parameters (BatchNorm running statistics not counted)."""
        return int(sum(p.numel() for p in self.net_.parameters())) if self.net_ is not None else 0

    def _export_state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy().copy() for k, v in self.net_.state_dict().items()}
        if self.baseline_ is not None:
            state["baseline"] = self.baseline_
        return state

    def _import_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.device_ = resolve_device(self.device)
        net = self._build_net()
        expected = set(net.state_dict())
        given = {k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")}
        missing = expected - set(given)
        if missing:
            raise KeyError(", ".join(f"net.{k}" for k in sorted(missing)))
        net.load_state_dict(given, strict=True)
        self.net_ = net.to(self.device_).eval()
        self.baseline_ = tensors.get("baseline")
