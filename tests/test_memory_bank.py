"""The memory bank's nearest-row search: exact, and the same bits whatever the thread count."""

import numpy as np
import pytest
import torch

from ad3d.detectors.memory_bank import nearest_distances, nearest_rows


@pytest.fixture
def features():
    rng = np.random.default_rng(3)
    bank = (rng.random((700, 33)) * 50).astype(np.float32)
    query = np.concatenate([bank[:20] + 1e-3, (rng.random((300, 33)) * 50).astype(np.float32)])
    return query, bank


def test_nearest_rows_match_brute_force_in_float64(features):
    query, bank = features
    dist, idx = nearest_rows(torch.from_numpy(query), torch.from_numpy(bank), k=3, chunk=64)
    full = np.linalg.norm(query[:, None, :].astype(np.float64) - bank[None].astype(np.float64), axis=2)
    expected = np.sort(full, axis=1)[:, :3]
    assert np.allclose(dist.numpy(), expected, rtol=1e-6)
    assert np.array_equal(idx[:20, 0].numpy(), np.arange(20))
    assert np.allclose(np.take_along_axis(full, idx.numpy(), 1), expected, rtol=1e-6)


def test_distances_are_recomputed_directly_not_through_a_matrix_product(features):
    # cdist's product form rounds differently with the BLAS thread split; the direct form does not
    query, bank = features
    dist, idx = nearest_rows(torch.from_numpy(query), torch.from_numpy(bank), k=1)
    q, b = torch.from_numpy(query), torch.from_numpy(bank)
    direct = (q - b[idx[:, 0]]).square().sum(-1).sqrt()
    assert torch.equal(dist[:, 0], direct)


def test_nearest_distances_do_not_depend_on_the_thread_count(features):
    query, bank = features
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(nearest_distances(query, bank, chunk=100))
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
