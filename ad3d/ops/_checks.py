"""Input checks and batching shared by every op: (N,3) or (B,N,3) tensors, ragged lengths."""

from __future__ import annotations

import torch


def as_batch(points: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """A contiguous float (B, N, 3) tensor and whether the input was a single (N, 3) cloud."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    single = points.dim() == 2
    batch = points.unsqueeze(0) if single else points
    if batch.dim() != 3 or batch.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if batch.dtype not in (torch.float32, torch.float64):
        batch = batch.float()
    return batch.contiguous(), single


def as_lengths(lengths, batch: torch.Tensor, name: str) -> torch.Tensor:
    """Per-cloud lengths as a CPU int64 tensor, checked against the padded size."""
    b, n = batch.shape[:2]
    if lengths is None:
        return torch.full((b,), n, dtype=torch.int64)
    lengths = torch.as_tensor(lengths).to("cpu", torch.int64).reshape(-1)
    if lengths.numel() != b:
        raise ValueError(f"{name} has {lengths.numel()} entries for a batch of {b}")
    if (lengths < 0).any() or (lengths > n).any():
        raise ValueError(f"{name} must lie in [0, {n}], got {lengths.tolist()}")
    return lengths


def check_finite(batch: torch.Tensor, lengths: torch.Tensor, name: str) -> None:
    """Raise if any point inside its cloud's length holds NaN or inf (padding is not checked)."""
    if bool(torch.isfinite(batch).all()):  # the common case: one fused reduction
        return
    n = batch.shape[1]
    valid = torch.arange(n, device=batch.device)[None, :] < lengths.to(batch.device)[:, None]
    bad = ~torch.isfinite(batch).all(dim=-1) & valid
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} NaN/inf points")


def check_k(k, lengths: torch.Tensor, what: str) -> int:
    """k as an int, checked to be positive and no larger than the smallest cloud."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if lengths.numel() == 0 or int(lengths.min()) == 0:
        raise ValueError(f"{what} got an empty {'cloud' if what == 'fps' else 'reference cloud'}")
    if k > int(lengths.min()):
        raise ValueError(
            f"k={int(k)} exceeds the number of points in the smallest "
            f"{'cloud' if what == 'fps' else 'reference cloud'} ({int(lengths.min())})"
        )
    return int(k)
