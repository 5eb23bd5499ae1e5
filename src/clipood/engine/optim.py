"""AdamW with decoupled weight decay on weight matrices only, and a cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed and an undecayed group.

    Weight decay applies to tensors with two or more dimensions (linear and
    convolution weights, embeddings). Biases and normalisation scales and shifts are
    one-dimensional and get none, because shrinking them toward zero changes the
    function the pretrained network computes rather than regularising it.
    """
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return torch.optim.AdamW(parameter_groups(module, weight_decay), lr=lr)


def cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier before optimiser step ``step`` (0-based).

    Linear warmup from ``1/warmup_steps`` to 1 over the first ``warmup_steps`` steps,
    then cosine decay from 1 toward 0 over the remaining steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    if warmup_steps < 0 or warmup_steps >= max(total_steps, 1):
        raise ValueError(
            f"warmup_steps must be in [0, steps), got {warmup_steps} for {total_steps} steps"
        )

    def factor(step: int) -> float:
        return cosine_factor(step, total_steps, warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
