"""R3D-AD's scores against its release (alibalapour/r3d-ad @ 7b1d989, the authors' release commit:
evaluation/evaluation_metrics.py ROC_AP), which min-max normalises them over the test set."""

import numpy as np
import torch

from ad3d import ops
from ad3d.detectors.memory_bank import reweighted_max
from ad3d.detectors.scoring import top_mean


def normalised(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def test_object_score_is_patchcores_reweighted_max_against_the_reconstruction(fixture):
    f = fixture("r3dad_scores")
    objects = np.array([reweighted_max(ref, recon) for ref, recon in zip(f["refs"], f["recons"])])
    np.testing.assert_allclose(normalised(objects), f["object"], atol=1e-5)
    tops = np.array(
        [
            top_mean(ops.knn(torch.from_numpy(r), torch.from_numpy(c), 1)[0][:, 0].sqrt().numpy(), 0.03)
            for r, c in zip(f["refs"], f["recons"])
        ]
    )
    assert np.abs(normalised(tops) - f["object"]).max() > 1e-2  # ad3d's default (top 3 %) is another score


def test_point_scores_are_the_distance_to_the_nearest_reconstructed_point(fixture):
    f = fixture("r3dad_scores")
    dist = [
        ops.knn(torch.from_numpy(r), torch.from_numpy(c), 1)[0][:, 0].sqrt().numpy()
        for r, c in zip(f["refs"], f["recons"])
    ]
    # the release's cdist expands |a - b|^2 in float32 for clouds this size: 3e-4 of the range at most here
    np.testing.assert_allclose(normalised(np.concatenate(dist)), f["points"], atol=1e-3)


def test_noise_schedule_matches_variance_schedule(fixture):
    """Already equal before (issue 23): kept so. models/diffusion.py VarianceSchedule(200, 1e-4, 0.05)."""
    from ad3d.nn.diffusion import LinearSchedule

    f = fixture("r3dad_schedule")
    schedule = LinearSchedule(200, 1e-4, 0.05)
    np.testing.assert_allclose(schedule.alpha_bar.numpy(), f["alpha_bars"], rtol=2e-5)
    sigmas = [0.0] + [schedule.posterior_variance(t) ** 0.5 for t in range(1, 201)]
    np.testing.assert_allclose(sigmas, f["sigmas_inflex"], rtol=1e-4, atol=1e-7)


def r3dnet_from_release(state: dict[str, np.ndarray]):
    """ad3d's R3DNet at the release's sizes holding a released AutoEncoder's weights (key by key; the
    release's unused log-variance branch `*_v` left out)."""
    from ad3d.nn.pointnet import R3DNet

    net = R3DNet(256, (128, 128, 256, 512), (128, 256, 512, 256, 128), fourier=0, time_dim=0)
    names = {f"encoder.conv{i + 1}": f"encoder.points.{3 * i}" for i in range(4)}
    names |= {f"encoder.bn{i + 1}": f"encoder.points.{3 * i + 1}" for i in range(4)}
    names |= {f"encoder.fc{i + 1}_m": f"encoder.head.{3 * i}" for i in range(3)}
    names |= {f"encoder.fc_bn{i + 1}_m": f"encoder.head.{3 * i + 1}" for i in range(2)}
    for i in range(6):
        for theirs, ours in (("_layer", "layer"), ("_hyper_gate", "gate"), ("_hyper_bias", "bias")):
            names[f"diffusion.net.layers.{i}.{theirs}"] = f"denoiser.layers.{i}.{ours}"
    mapped = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in names:
            mapped[f"{names[module]}.{leaf}"] = torch.from_numpy(value)
    net.load_state_dict(mapped, strict=True)
    return net.eval()


def test_encoder_denoiser_and_ddpm_sampling_match_the_release(fixture, monkeypatch):
    # rows already equal, kept so: models/autoencoder.py, encoders/pointnet.py, diffusion.py
    import json

    from oracle_weights import seeded_state

    from ad3d.nn.diffusion import LinearSchedule

    f = fixture("r3dad_network")
    shapes = {k: tuple(json.loads(s)) for k, s in zip(f["keys"], f["shapes"])}
    net = r3dnet_from_release(seeded_state(shapes, 13))
    schedule = LinearSchedule(200, 1e-4, 0.05)
    with torch.no_grad():
        code = net.encoder(torch.from_numpy(f["clouds"]))
        np.testing.assert_allclose(code.numpy(), f["code"], rtol=1e-5, atol=1e-5)
        steps = torch.from_numpy(f["steps"])
        noise = net.denoiser(torch.from_numpy(f["x_t"]), schedule.betas[steps].float(), code)
        np.testing.assert_allclose(noise.numpy(), f["noise"], rtol=1e-5, atol=1e-5)
        draws = np.random.default_rng(int(f["draws_seed"])).standard_normal((200, *f["clouds"].shape), np.float32)
        queue = [torch.from_numpy(d) for d in draws[1:]]
        monkeypatch.setattr(torch, "randn", lambda *a, **k: queue.pop(0))  # the same z at every step

        def denoise(x, t):
            return net.denoiser(x, schedule.betas[t].float(), code)

        decoded = schedule.ddpm(denoise, torch.from_numpy(draws[0]), 200)
    assert not queue  # one draw per step from 200 to 2, none at the last
    np.testing.assert_allclose(decoded.numpy(), f["decoded"], atol=2e-5)  # 200 steps; schedule float64 vs float32


def test_patch_gen_given_the_releases_draws_moves_what_random_patch_moves(fixture):
    # utils/util.py random_patch: a row already equal, kept so (the release never calls it; ad3d trains with it)
    from scripted import ScriptedDraws

    from ad3d.synth.pseudo import VIEWPOINTS, patch_gen

    f = fixture("r3dad_patch_gen")
    view = int(np.flatnonzero((VIEWPOINTS == f["viewpoint"]).all(1))[0])
    sign = 1.0 if f["sign_draw"] < 0.5 else -1.0  # the release: +scale when random.random() < 0.5
    draws = ScriptedDraws(integers=[view], uniform=[f["magnitudes"]], choice=[sign])
    points = f["points"]
    moved, offset, mask = patch_gen(points, draws, patch_fraction=40 / len(points), scale=0.05)
    assert draws.spent()
    assert np.array_equal(mask, f["mask"] == 1)
    np.testing.assert_allclose(moved, f["moved"], atol=1e-6)
