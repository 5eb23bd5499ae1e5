"""Training settings of one fine-tuning run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from clipood.engine.precision import check_precision

LOSSES = ("ce", "mms")
AVERAGINGS = ("none", "bma", "uniform", "ema")

# Settings that change how often things are logged or saved, or where the run computes,
# but not which weights it produces. A run may resume with other values for these.
NON_RESULT_FIELDS = (
    "eval_every",
    "checkpoint_every",
    "log_every",
    "num_workers",
    "device",
    "average_device",
    "eval_batch_size",
)


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run of the image encoder.

    ``batch_size`` counts samples per training group (per source domain) per step, for
    the whole job: with several processes each takes ``batch_size / world_size`` of
    every group. ``eval_every`` and ``checkpoint_every`` count optimiser steps, 0 means
    only at the end. ``grad_clip_norm`` 0 disables clipping.
    """

    loss: str = "mms"
    averaging: str = "bma"
    margin: float = 0.05
    beta: float = 0.5
    ema_decay: float = 0.999
    lr: float = 3e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    steps: int = 200
    batch_size: int = 16
    precision: str = "fp32"
    eval_every: int = 0
    checkpoint_every: int = 0
    num_workers: int = 0
    seed: int = 0
    device: str = "cpu"
    average_device: str | None = None
    templates: tuple[str, ...] = ("a photo of a {}.",)
    log_every: int = 10
    grad_clip_norm: float = 0.0
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        self.templates = tuple(self.templates)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.averaging not in AVERAGINGS:
            raise ValueError(
                f"unknown averaging {self.averaging!r}; expected one of {', '.join(AVERAGINGS)}"
            )
        for name in ("steps", "batch_size", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "num_workers", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("margin", "grad_clip_norm", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("lr", "beta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"every template needs a '{{}}' for the class name: {self.templates}")
        check_precision(self.precision, self.device)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["templates"] = list(self.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**data)

    def result_differences(self, other: TrainConfig) -> list[str]:
        """Names of settings that differ and would change the trained weights."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in NON_RESULT_FIELDS and mine[k] != theirs[k]]
