"""Weight averaging over a training run: Beta moving average, EMA, uniform average,
and weight-space interpolation.

Each averager keeps a float32 copy of a module's parameters and updates it in place
with ``avg <- avg + c_t * (theta_t - avg)`` using fused ``torch._foreach_lerp_``.
Only the coefficient ``c_t`` differs between methods:

- Beta moving average (BMA, from "CLIPood: Generalizing CLIP to Out-of-Distributions",
  Shu et al., ICML 2023): ``w_t = BetaPDF((t + 0.5) / (T + 1); beta, beta)`` for
  steps ``t = 0..T`` with the initial weights as step 0, and ``c_t = w_t / sum_{s<=t} w_s``.
  The result is exactly ``sum_t w_t theta_t / sum_t w_t``.
- Uniform average: BMA with ``beta = 1`` (every step weighs the same).
- Exponential moving average: ``c_t = 1 - decay``.

Buffers (BatchNorm running statistics) are not averaged: ``copy_to`` takes them
from the live module, which matches a run whose normalisation layers are frozen.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch import nn


def beta_weights(total_steps: int, beta: float) -> np.ndarray:
    """Return the BMA weights ``w_0..w_T`` for a run of ``total_steps`` optimiser steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    positions = (np.arange(total_steps + 1) + 0.5) / (total_steps + 1)
    return stats.beta.pdf(positions, beta, beta)


class WeightAverage:
    """Float32 running average of a module's parameters.

    Args:
        module: the module whose parameters are averaged; its current weights are step 0.
        device: where the average lives (defaults to the parameters' device); a CPU copy
            saves accelerator memory at the cost of one transfer per update.
    """

    def __init__(self, module: nn.Module, device: torch.device | str | None = None):
        self.names = [name for name, _ in module.named_parameters()]
        first = next(module.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.average = [self._snapshot(p) for p in module.parameters()]
        self.step = 0

    def _snapshot(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(self.device, torch.float32, copy=True)

    def coefficient(self, step: int) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, module: nn.Module, step: int | None = None) -> None:
        """Fold the module's current parameters in as optimiser step ``step``."""
        self.step = self.step + 1 if step is None else step
        weight = self.coefficient(self.step)
        if weight == 0.0:
            return
        current = [p.detach() for p in module.parameters()]
        if len(current) != len(self.average):
            raise ValueError(
                f"module has {len(current)} parameters but the average tracks {len(self.average)}"
            )
        if current[0].device != self.device or current[0].dtype != torch.float32:
            current = [p.to(self.device, torch.float32) for p in current]
        torch._foreach_lerp_(self.average, current, weight)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the average (cast to their dtype)."""
        for param, avg in zip(module.parameters(), self.average, strict=True):
            param.copy_(avg.to(param.device, param.dtype))

    def averaged_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Return the module's state dict with parameters replaced by the float32 average."""
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        for name, avg in zip(self.names, self.average, strict=True):
            state[name] = avg.detach().cpu().clone()
        return state

    def state_dict(self) -> dict:
        return {"step": self.step, "average": [t.cpu() for t in self.average]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError("averaging state does not match the module's parameters")
        self.step = int(state["step"])
        self.average = [t.to(self.device, torch.float32) for t in state["average"]]


class BetaMovingAverage(WeightAverage):
    """Beta moving average over a run of ``total_steps`` optimiser steps."""

    def __init__(
        self,
        module: nn.Module,
        total_steps: int,
        beta: float = 0.5,
        device: torch.device | str | None = None,
    ):
        super().__init__(module, device)
        self.weights = beta_weights(total_steps, beta)
        self.cumulative = np.cumsum(self.weights)
        self.total_steps = total_steps
        self.beta = beta

    def coefficient(self, step: int) -> float:
        if not 1 <= step <= self.total_steps:
            raise ValueError(f"step {step} is outside the run's 1..{self.total_steps} steps")
        return float(self.weights[step] / self.cumulative[step])


class ExponentialMovingAverage(WeightAverage):
    """EMA with a fixed ``decay`` per step (the average of timm's ``ModelEmaV3`` kind)."""

    def __init__(self, module: nn.Module, decay: float = 0.999, device=None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        super().__init__(module, device)
        self.decay = decay

    def coefficient(self, step: int) -> float:
        return 1.0 - self.decay


def interpolate_weights(
    start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Return ``(1 - alpha) * start + alpha * end`` for floating tensors (WiSE-FT style).

    Non-floating tensors (integer buffers) are taken from ``end``.
    """
    if start.keys() != end.keys():
        missing = sorted(set(start) ^ set(end))[:5]
        raise ValueError(f"state dicts differ in keys, for example {missing}")
    mixed = {}
    for key, end_value in end.items():
        if end_value.is_floating_point():
            mixed[key] = torch.lerp(start[key].to(end_value.dtype), end_value, alpha)
        else:
            mixed[key] = end_value.clone()
    return mixed


def make_averager(
    kind: str, module: nn.Module, total_steps: int, beta: float, ema_decay: float, device=None
) -> WeightAverage | None:
    """Build the averager a method names: ``none``, ``bma``, ``uniform`` or ``ema``."""
    if kind == "none":
        return None
    if kind == "bma":
        return BetaMovingAverage(module, total_steps, beta, device)
    if kind == "uniform":
        return BetaMovingAverage(module, total_steps, 1.0, device)
    if kind == "ema":
        return ExponentialMovingAverage(module, ema_decay, device)
    raise ValueError(f"unknown averaging {kind!r}; expected one of none, bma, uniform, ema")


__all__ = [
    "BetaMovingAverage",
    "ExponentialMovingAverage",
    "WeightAverage",
    "beta_weights",
    "interpolate_weights",
    "make_averager",
]
