"""Mixed precision with float32 master weights.

Parameters, gradients, optimiser moments and weight averages always stay in float32.
``precision`` only chooses the autocast dtype of the forward pass:

- ``fp32``: no autocast.
- ``bf16``: bfloat16 autocast on CPU and CUDA; no loss scaling is needed because
  bfloat16 has float32's exponent range.
- ``fp16``: float16 autocast on CUDA with ``torch.amp.GradScaler`` loss scaling.

Keeping float32 masters matters at fine-tuning learning rates: float16 spacing at 1.0 is
``2**-10`` (about 9.8e-4), so an update of 1e-4 applied to a float16 weight of 1.0 rounds
away, while the float32 weight takes it.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def check_precision(precision: str, device: str | torch.device) -> None:
    """Raise ValueError for an unknown precision or fp16 on a device without it."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device_type(device) != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device, got device {str(device)!r}; "
            f"use precision 'bf16' or 'fp32' on {device_type(device)}"
        )


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """Return the autocast context for the forward pass (a no-op for ``fp32``)."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=AUTOCAST_DTYPES[precision])


def make_grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """Return a loss scaler that is active only for ``fp16`` (disabled scalers pass through)."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device_type(device), enabled=precision == "fp16")
