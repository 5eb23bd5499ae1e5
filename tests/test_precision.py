"""Float32 master weights keep updates that float16 weights would round away."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clipood.engine.precision import autocast, check_precision, make_grad_scaler

UPDATE = 1e-4
FP16_SPACING_AT_ONE = 2.0**-10


def test_fp16_spacing_is_larger_than_update():
    assert torch.finfo(torch.float16).eps == FP16_SPACING_AT_ONE
    assert UPDATE < FP16_SPACING_AT_ONE / 2


def test_fp16_weight_loses_small_update():
    # The cast-to-float16 style: weights live in float16 and the step is applied there.
    weight = torch.tensor([1.0], dtype=torch.float16)
    updated = weight - torch.tensor([UPDATE], dtype=torch.float16)
    assert updated.item() == 1.0


def test_float32_master_keeps_small_update():
    weight = nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=UPDATE)
    with autocast("bf16", "cpu"):
        loss = (weight * torch.ones(1)).sum()  # gradient 1, so the step is -lr
    loss.backward()
    optimizer.step()
    assert weight.dtype == torch.float32
    assert weight.item() != 1.0
    assert weight.item() == pytest.approx(1.0 - UPDATE, abs=1e-7)


def test_adamw_step_under_autocast_keeps_float32():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=UPDATE, weight_decay=0.0)
    with autocast("bf16", "cpu"):
        output = layer(torch.randn(16, 8))
        assert output.dtype == torch.bfloat16
    output.float().pow(2).mean().backward()
    optimizer.step()
    assert layer.weight.dtype == torch.float32
    # AdamW's first step moves every weight with a nonzero gradient by about lr.
    changes = (layer.weight - 1.0).abs()
    assert torch.all(changes > 0.5 * UPDATE)
    assert torch.all(changes < 1.5 * UPDATE)
    assert torch.all(layer.weight.half() == 1.0)  # the same weights stored in float16


def test_fp16_on_cpu_is_rejected():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        autocast("half", "cpu")


def test_grad_scaler_only_for_fp16():
    assert not make_grad_scaler("fp32", "cpu").is_enabled()
    assert not make_grad_scaler("bf16", "cpu").is_enabled()
