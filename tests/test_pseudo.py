"""Pseudo-anomaly generators: which points move, in which direction, by how much, and per-sample draws."""

import numpy as np
import pytest

from ad3d.synth.pseudo import (
    VIEWPOINTS,
    da_gen,
    missing_material,
    patch_gen,
    plain_bulge,
)


def sphere(n=2048, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p.astype(np.float32), p.astype(np.float32)  # points and outward normals of the unit sphere


def test_patch_gen_moves_the_patch_facing_a_viewpoint_along_view_rays():
    pts, _ = sphere()
    moved, offset, mask = patch_gen(pts, np.random.default_rng(3), patch_fraction=1 / 16, scale=0.05)
    assert mask.sum() == 128
    assert np.all(offset[~mask] == 0) and np.allclose(moved, pts + offset)
    # the patch is exactly the 128 points nearest one of the 26 viewpoints
    matches = [
        v
        for v in VIEWPOINTS
        if set(np.argsort(np.linalg.norm(pts - v, axis=1), kind="stable")[:128]) == set(np.flatnonzero(mask))
    ]
    assert len(matches) == 1
    view = matches[0]
    rays = pts[mask] - view
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    norms = np.linalg.norm(offset[mask], axis=1)
    cos = np.einsum("ij,ij->i", offset[mask], rays) / norms
    assert np.allclose(np.abs(cos), 1, atol=1e-5) and len(np.unique(np.sign(cos))) == 1  # one sign: bulge or dent
    assert norms.max() <= 0.05 + 1e-6
    # the magnitude falls off with distance from the viewpoint
    by_distance = norms[np.argsort(np.linalg.norm(pts[mask] - view, axis=1))]
    assert np.all(np.diff(by_distance) <= 1e-6)


def test_patch_gen_draws_both_signs():
    pts, _ = sphere()
    signs = set()
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, offset, mask = patch_gen(pts, rng)
        radial = np.einsum("ij,ij->i", offset[mask], pts[mask])
        signs.add(np.sign(radial.mean()))
    assert signs == {-1.0, 1.0}  # outward bulges and inward dents


def test_da_gen_is_a_bounded_sphere_crop_along_blended_normals():
    pts, normals = sphere()
    rng = np.random.default_rng(5)
    for _ in range(10):
        moved, offset, mask = da_gen(pts, normals, rng)
        idx = np.flatnonzero(mask)
        assert 2048 / 64 - 1 <= len(idx) <= 2048 / 16 + 1
        assert np.all(offset[~mask] == 0) and np.allclose(moved, pts + offset, atol=1e-6)
        assert np.linalg.norm(offset, axis=1).max() <= 0.12 + 1e-6
        # a sphere crop: every labelled point is nearer the crop's centre point than every other point
        centre = pts[idx].mean(0)
        seed = pts[np.argmin(np.linalg.norm(pts - centre, axis=1))]
        d = np.linalg.norm(pts - seed, axis=1)
        assert d[idx].max() <= np.sort(d)[len(idx)] + 0.05
        # direction within acos(0.95)-ish of the normal (lambda >= 0.95), either way along it
        moving = np.linalg.norm(offset[idx], axis=1) > 1e-6
        cos = np.einsum("ij,ij->i", offset[idx][moving], normals[idx][moving]) / np.linalg.norm(
            offset[idx][moving], axis=1
        )
        assert np.abs(cos).min() > 0.9


def test_da_gen_shears_the_two_halves_of_the_patch_opposite_ways():
    pts, normals = sphere()
    _, offset, mask = da_gen(pts, normals, np.random.default_rng(1))
    radial = np.einsum("ij,ij->i", offset[mask], normals[mask])
    assert (radial > 1e-4).any() and (radial < -1e-4).any()


def test_da_gen_draws_its_parameters_per_sample_and_repeats_with_a_seed():
    pts, normals = sphere()
    rng = np.random.default_rng(7)
    first, second = da_gen(pts, normals, rng)[1], da_gen(pts, normals, rng)[1]
    assert not np.allclose(first, second)
    assert np.array_equal(da_gen(pts, normals, np.random.default_rng(7))[1], first)
    peaks = {round(float(np.linalg.norm(da_gen(pts, normals, rng)[1], axis=1).max()), 4) for _ in range(8)}
    assert len(peaks) == 8  # magnitude D (and sigma, lambda) are drawn anew each time


def test_plain_bulge_moves_along_the_normal_most_at_its_seed():
    pts, normals = sphere()
    _, offset, mask = plain_bulge(pts, normals, np.random.default_rng(2))
    norms = np.linalg.norm(offset[mask], axis=1)
    cos = np.einsum("ij,ij->i", offset[mask], normals[mask])[norms > 0] / norms[norms > 0]
    assert np.allclose(np.abs(cos), 1, atol=1e-5) and len(np.unique(np.sign(cos))) == 1
    assert 0.06 - 1e-6 <= norms.max() <= 0.12 + 1e-6


@pytest.mark.parametrize("generator", [da_gen, plain_bulge])
def test_generators_keep_dtype_and_shape(generator):
    pts, normals = sphere(500)
    moved, _, mask = generator(pts, normals, np.random.default_rng(0))
    assert moved.shape == pts.shape and moved.dtype == np.float32 and mask.dtype == bool


def test_missing_material_opens_a_gap_and_pulls_its_rim_across_it():
    pts, normals = sphere(4096)
    rng = np.random.default_rng(5)
    moved, correction, rim, source = missing_material(
        pts, normals, rng, region=(1 / 32, 1 / 32), magnitude=(0.1, 0.1), rim=(1.5, 1.5)
    )
    relocated = np.flatnonzero(source != np.arange(len(pts)))
    assert len(relocated) == 128 and moved.shape == pts.shape and moved.dtype == np.float32
    kept = np.setdiff1d(np.arange(len(pts)), relocated)
    assert np.array_equal(moved[kept], pts[kept])  # the rest of the cloud does not move
    # the gap is empty: no point of the new cloud lies where the patch was
    seed = pts[relocated][np.argmin(np.linalg.norm(pts[relocated] - pts[relocated].mean(0), axis=1))]
    radius = np.linalg.norm(pts[relocated] - seed, axis=1).max()
    assert np.linalg.norm(moved - seed, axis=1).min() > 0.5 * radius
    # relocated points stay on the surface (midpoints of near kept points) and borrow a kept point's normal
    assert np.abs(np.linalg.norm(moved[relocated], axis=1) - 1).max() < 0.01
    assert not np.isin(source[relocated], relocated).any()
    # only rim points (outside the gap, near it) carry a correction, tangential and towards the gap
    assert rim.any() and not rim[relocated].any() and np.all(correction[~rim] == 0)
    size = np.linalg.norm(correction[rim], axis=1)
    assert size.max() <= 0.1 + 1e-6 and np.all(size >= 0)
    pulled = size > 1e-6
    along_normal = np.einsum("ij,ij->i", correction[rim][pulled], normals[rim][pulled]) / size[pulled]
    assert np.abs(along_normal).max() < 1e-4
    towards = np.einsum("ij,ij->i", correction[rim][pulled], seed - pts[rim][pulled])
    assert np.all(towards > 0)
    # the pull is strongest next to the gap and fades outwards
    by_distance = size[np.argsort(np.linalg.norm(pts[rim] - seed, axis=1))]
    assert by_distance[: len(by_distance) // 4].mean() > by_distance[-len(by_distance) // 4 :].mean()
