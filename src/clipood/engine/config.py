"""Training settings of one fine-tuning run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from clipood.engine.precision import check_precision
from clipood.inference import check_templates

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
    every group. ``fit`` rejects a ``batch_size`` above the number of images in the
    smallest group. ``eval_every`` and ``checkpoint_every`` count optimiser steps, 0 means
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
        # A single template given as a string (for example from YAML) is one template.
        if isinstance(self.templates, str):
            self.templates = (self.templates,)
        self.templates = tuple(self.templates)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting.

        Checks types, ranges, choices, devices and templates, everything that can be
        checked without data or a model, so a run can validate its settings before it
        writes anything.
        """
        self._check_types()
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.averaging not in AVERAGINGS:
            raise ValueError(
                f"unknown averaging {self.averaging!r}; expected one of {', '.join(AVERAGINGS)}"
            )
        self._check_ranges()
        check_templates(self.templates)
        for name in ("device", "average_device"):
            check_device(name, getattr(self, name))
        check_precision(self.precision, self.device)

    def _check_types(self) -> None:
        # Field annotations are strings here because of ``from __future__ import annotations``.
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{item.name} must be an integer, got {value!r}")
            if item.type == "float" and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"{item.name} must be a number, got {value!r}")
            if item.type == "str" and not isinstance(value, str):
                raise ValueError(f"{item.name} must be a string, got {value!r}")
        if self.average_device is not None and not isinstance(self.average_device, str):
            raise ValueError(f"average_device must be a string, got {self.average_device!r}")
        if not all(isinstance(template, str) for template in self.templates):
            raise ValueError(f"templates must be strings, got {list(self.templates)!r}")

    def _check_ranges(self) -> None:
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
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

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

    def describe_differences(self, other: TrainConfig) -> str:
        """Describe the weight-changing settings that differ as ``name: saved X, now Y``.

        ``self`` is the saved side. The text is empty if no such setting differs.
        """
        return ", ".join(
            f"{name}: saved {getattr(self, name)!r}, now {getattr(other, name)!r}"
            for name in self.result_differences(other)
        )


def check_device(name: str, value: str | None, available: bool = False) -> None:
    """Raise ValueError unless ``value`` is ``None`` or a device string torch accepts and,
    with ``available``, a device this machine has. Settings checks leave ``available``
    off, so a recipe for a GPU machine still resolves on a CPU-only one."""
    if value is None:
        return
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ValueError(
            f"invalid {name} {value!r}; use a torch device such as cpu, cuda or cuda:1"
        ) from err
    if available:
        check_device_available(name, device)


def check_device_available(name: str, device: torch.device) -> None:
    """Raise ValueError if ``device`` is a CUDA or MPS device that this machine lacks."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{name} {str(device)!r} needs a CUDA GPU, but torch finds none on this "
                "machine; use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{name} {str(device)!r} is not available: torch finds {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{name} {str(device)!r} needs Apple's MPS backend, which torch does not find "
            "on this machine; use --device cpu"
        )
