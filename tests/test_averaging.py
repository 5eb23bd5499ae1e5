"""Weight averaging: BMA weights, the running update against explicit averages, EMA."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from clipood.averaging import (
    BetaMovingAverage,
    ExponentialMovingAverage,
    beta_weights,
    interpolate_weights,
    make_averager,
)


def make_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def perturb(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator))


def run_and_record(module: nn.Module, averager, steps: int, seed: int = 1):
    """Change the weights ``steps`` times, updating the averager after each change."""
    generator = torch.Generator().manual_seed(seed)
    history = [[p.detach().clone().double() for p in module.parameters()]]
    for step in range(1, steps + 1):
        perturb(module, generator)
        averager.update(module, step)
        history.append([p.detach().clone().double() for p in module.parameters()])
    return history


def explicit_average(history, weights):
    total = float(np.sum(weights))
    return [
        sum(weights[t] * history[t][i] for t in range(len(history))) / total
        for i in range(len(history[0]))
    ]


def test_beta_weights_match_scipy_pdf():
    weights = beta_weights(9, 0.5)
    positions = (np.arange(10) + 0.5) / 10
    np.testing.assert_array_equal(weights, stats.beta.pdf(positions, 0.5, 0.5))


def test_beta_weights_u_shaped_below_one():
    weights = beta_weights(20, 0.5)
    assert weights[0] > weights[10]
    assert weights[-1] > weights[10]
    np.testing.assert_allclose(weights, weights[::-1])


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_bma_equals_explicit_weighted_average(beta):
    module = make_module()
    steps = 7
    bma = BetaMovingAverage(module, steps, beta)
    history = run_and_record(module, bma, steps)
    expected = explicit_average(history, beta_weights(steps, beta))
    for got, want in zip(bma.average, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_beta_one_is_uniform_average():
    module = make_module()
    steps = 5
    bma = make_averager("uniform", module, steps, beta=0.5, ema_decay=0.9)
    history = run_and_record(module, bma, steps)
    for i, got in enumerate(bma.average):
        uniform = sum(history[t][i] for t in range(steps + 1)) / (steps + 1)
        torch.testing.assert_close(got.double(), uniform, rtol=1e-5, atol=1e-6)


def test_bma_includes_pretrained_step_zero():
    module = make_module()
    start = [p.detach().clone() for p in module.parameters()]
    bma = BetaMovingAverage(module, total_steps=1, beta=1.0)
    generator = torch.Generator().manual_seed(3)
    perturb(module, generator)
    bma.update(module, 1)
    # Two equally weighted points: the average is the midpoint of start and end.
    for got, first, last in zip(bma.average, start, module.parameters(), strict=True):
        torch.testing.assert_close(got, (first + last.detach()) / 2)


def test_average_kept_in_float32_for_bf16_module():
    module = make_module().to(torch.bfloat16)
    bma = BetaMovingAverage(module, 3, 0.5)
    assert all(t.dtype == torch.float32 for t in bma.average)


def test_copy_to_keeps_live_buffers():
    module = make_module()
    bma = BetaMovingAverage(module, 2, 0.5)
    run_and_record(module, bma, 2)
    module[1].running_mean.fill_(7.0)
    bma.copy_to(module)
    assert torch.equal(module[1].running_mean, torch.full((3,), 7.0))
    for param, avg in zip(module.parameters(), bma.average, strict=True):
        assert torch.equal(param, avg)


def test_averaged_state_dict_replaces_parameters_only():
    module = make_module()
    bma = BetaMovingAverage(module, 2, 0.5)
    run_and_record(module, bma, 2)
    state = bma.averaged_state_dict(module)
    assert torch.equal(state["0.weight"], bma.average[0])
    assert torch.equal(state["1.running_var"], module[1].running_var)


def test_ema_update_formula():
    module = make_module()
    start = [p.detach().clone() for p in module.parameters()]
    ema = ExponentialMovingAverage(module, decay=0.9)
    perturb(module, torch.Generator().manual_seed(5))
    ema.update(module)
    for got, old, new in zip(ema.average, start, module.parameters(), strict=True):
        torch.testing.assert_close(got, 0.9 * old + 0.1 * new.detach())


def test_state_dict_round_trip():
    module = make_module()
    bma = BetaMovingAverage(module, 4, 0.5)
    run_and_record(module, bma, 2)
    restored = BetaMovingAverage(make_module(), 4, 0.5)
    restored.load_state_dict(bma.state_dict())
    assert restored.step == 2
    for a, b in zip(restored.average, bma.average, strict=True):
        assert torch.equal(a, b)


def test_step_outside_run_rejected():
    bma = BetaMovingAverage(make_module(), 3, 0.5)
    with pytest.raises(ValueError, match="step 4 is outside"):
        bma.update(make_module(), 4)


def test_interpolate_weights_endpoints_and_middle():
    start = {"w": torch.zeros(2), "n": torch.tensor(1)}
    end = {"w": torch.ones(2), "n": torch.tensor(5)}
    assert torch.equal(interpolate_weights(start, end, 0.0)["w"], torch.zeros(2))
    assert torch.equal(interpolate_weights(start, end, 1.0)["w"], torch.ones(2))
    assert torch.equal(interpolate_weights(start, end, 0.25)["w"], torch.full((2,), 0.25))
    assert interpolate_weights(start, end, 0.5)["n"].item() == 5


def test_unknown_averaging_rejected():
    with pytest.raises(ValueError, match="unknown averaging 'swa'"):
        make_averager("swa", make_module(), 3, 0.5, 0.9)
