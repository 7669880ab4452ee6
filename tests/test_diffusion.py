"""The DDPM schedule, forward noising and both samplers against closed-form values."""

import math

import pytest
import torch

from ad3d.nn.diffusion import LinearSchedule


def small():
    return LinearSchedule(steps=3, beta_1=0.1, beta_T=0.3)  # betas 0.1, 0.2, 0.3


def test_linear_betas_and_cumulative_alphas():
    s = small()
    assert torch.allclose(s.betas, torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64))
    assert torch.allclose(s.alpha_bar, torch.tensor([1.0, 0.9, 0.72, 0.504], dtype=torch.float64))
    default = LinearSchedule()
    assert default.betas[1] == pytest.approx(1e-4) and default.betas[200] == pytest.approx(0.05)
    assert float(default.alpha_bar[200]) == pytest.approx(
        math.prod(1 - (1e-4 + i * (0.05 - 1e-4) / 199) for i in range(200))
    )


def test_q_sample_and_predict_x0_by_hand():
    s = small()
    x0 = torch.tensor([[[1.0, -2.0, 0.5]]])
    eps = torch.tensor([[[0.3, 0.1, -1.0]]])
    t = torch.tensor([2])
    expected = math.sqrt(0.72) * x0 + math.sqrt(0.28) * eps
    x_t = s.q_sample(x0, t, eps)
    assert torch.allclose(x_t, expected, atol=1e-6)
    assert torch.allclose(s.predict_x0(x_t, t, eps), x0, atol=1e-6)


def test_posterior_variance_by_hand():
    s = small()
    assert s.posterior_variance(2) == pytest.approx((1 - 0.9) / (1 - 0.72) * 0.2)
    assert s.posterior_variance(1) == pytest.approx(0.0)  # alpha_bar_0 = 1: the last step adds no noise


def oracle(x0, schedule):
    """A perfect noise predictor for a known clean cloud."""

    def denoise(x_t, t):
        a, s = schedule.coefficients(t)
        return (x_t - a * x0) / s

    return denoise


@pytest.mark.parametrize("start,steps", [(200, 20), (200, 200), (50, 7)])
def test_ddim_with_a_perfect_denoiser_returns_the_clean_cloud(start, steps):
    s = LinearSchedule()
    x0 = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(0))
    x_t = s.q_sample(x0, torch.full((2,), start), torch.randn(2, 64, 3))
    assert torch.allclose(s.ddim(oracle(x0, s), x_t, start, steps), x0, atol=1e-4)


def test_ddpm_with_a_perfect_denoiser_returns_the_clean_cloud():
    s = LinearSchedule(steps=50)
    x0 = torch.randn(1, 32, 3)
    x_t = torch.randn(1, 32, 3)
    out = s.ddpm(oracle(x0, s), x_t, 50, torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0, atol=1e-4)


def test_ddpm_step_is_the_posterior_mean_plus_sigma_noise():
    """From t=2 with the true noise, x1 = c0 x0 + c2 x2 + sigma_2 z (DDPM eq. 7), z from the generator."""
    s = small()
    x0 = torch.tensor([[[0.4, -0.2, 1.0]]])
    eps = torch.tensor([[[1.0, 0.5, -0.5]]])
    x2 = s.q_sample(x0, torch.tensor([2]), eps)
    seen = {}

    def denoise(x_t, t):
        seen[int(t[0])] = x_t.clone()
        return oracle(x0, s)(x_t, t)

    out = s.ddpm(denoise, x2, 2, torch.Generator().manual_seed(0))
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    c0 = math.sqrt(0.9) * 0.2 / (1 - 0.72)
    c2 = math.sqrt(0.8) * (1 - 0.9) / (1 - 0.72)
    sigma = math.sqrt((1 - 0.9) / (1 - 0.72) * 0.2)
    assert torch.allclose(seen[1], c0 * x0 + c2 * x2 + sigma * z, atol=1e-5)
    assert torch.allclose(out, x0, atol=1e-5)  # the last step (t=1) is noise-free and exact
