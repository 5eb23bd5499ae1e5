"""Code shared by the open-class and in-the-wild protocols: method settings, training,
evaluation of the zero-shot, final and averaged weights, and the run summary.

A method name fixes the loss, the weight averaging and which weights a run reports:

| method | loss | averaging | reported weights |
|---|---|---|---|
| zeroshot | no training | | zeroshot |
| erm | ce | none | final |
| mms | mms | none | final |
| clipood | mms | bma | averaged |
| erm-bma | ce | bma | averaged |
| erm-ema | ce | ema | averaged |
| wise-ft | ce | none | wise (weights halfway between zero-shot and final) |
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from clipood.averaging import interpolate_weights
from clipood.data.samples import ImageSample
from clipood.engine.config import TrainConfig
from clipood.engine.run_folder import write_json_atomic
from clipood.engine.train import fit
from clipood.experiments.methods import get_method
from clipood.models.base import ImageTextModel, ModelSpec
from clipood.models.defaults import defaults_for
from clipood.models.loading import load_model, parse_model_spec

log = logging.getLogger(__name__)

# Model of a run when none is named: the offline EfficientNet-Lite0 + MiniLM model, whose
# towers come from installed packages, so it needs no network access.
DEFAULT_MODEL = "offline"


@dataclass(frozen=True)
class MethodSettings:
    """Training loss (``None`` for no training), averaging, reported weights and the
    WiSE-FT interpolation weight of a method."""

    loss: str | None
    averaging: str
    reported: str
    interpolation: float | None = None


def method_settings(name: str) -> MethodSettings:
    """Derive the protocol settings of a method in ``clipood.experiments.methods``."""
    method = get_method(name)
    if not method.train:
        return MethodSettings(None, "none", "zeroshot")
    if method.interpolation is not None:
        return MethodSettings(method.loss, method.averaging, "wise", method.interpolation)
    reported = "averaged" if method.averaging != "none" else "final"
    return MethodSettings(method.loss, method.averaging, reported)


def cache_dir() -> Path:
    """Return the folder for built artefacts: ``$CLIPOOD_CACHE`` or ``~/.cache/clipood``."""
    return Path(os.environ.get("CLIPOOD_CACHE", "~/.cache/clipood")).expanduser()


@dataclass
class ProtocolRun:
    """One protocol run's model, settings and output folder."""

    model: ImageTextModel
    spec: ModelSpec
    protocol: str
    dataset: str
    method: str
    seed: int
    run_dir: Path
    config: TrainConfig
    settings: MethodSettings
    eval_options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "method": self.method,
            "seed": self.seed,
            "model": str(self.spec),
            "train_config": self.config.to_dict() if self.settings.loss else None,
        }


def train_config_for(
    spec: ModelSpec,
    protocol: str,
    dataset: str,
    method: str,
    seed: int,
    overrides: Mapping[str, object] | None = None,
    device: str = "cpu",
    templates: Sequence[str] = ("a photo of a {}.",),
) -> TrainConfig:
    """Build the training settings: per-model defaults, the method, then ``overrides``."""
    settings = method_settings(method)
    defaults = defaults_for(spec, protocol, dataset)
    values = {
        "lr": defaults.lr,
        "margin": defaults.margin,
        "beta": defaults.beta,
        "batch_size": defaults.batch_size,
        "steps": defaults.steps,
        "weight_decay": defaults.weight_decay,
        "warmup_steps": defaults.warmup_steps,
        "loss": settings.loss or "ce",
        "averaging": settings.averaging,
        "seed": seed,
        "device": device,
        "templates": tuple(templates),
    }
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(map(repr, unknown))}; valid settings: "
            f"{', '.join(sorted(known))}"
        )
    values.update(overrides or {})
    config = TrainConfig(**values)
    config.validate()
    return config


def prepare_run(
    model: str | ModelSpec | ImageTextModel,
    protocol: str,
    dataset: str,
    method: str,
    seed: int,
    run_dir: Path | str,
    overrides: Mapping[str, object] | None,
    device: str,
    templates: Sequence[str],
) -> ProtocolRun:
    """Load the model if given by name and resolve the run's settings."""
    settings = method_settings(method)
    spec = model.spec if isinstance(model, ImageTextModel) else parse_model_spec(model)
    config = train_config_for(spec, protocol, dataset, method, seed, overrides, device, templates)
    if not isinstance(model, ImageTextModel):
        model = load_model(spec, device=device)
    eval_options = {
        "device": device,
        "batch_size": config.eval_batch_size,
        "num_workers": config.num_workers,
    }
    return ProtocolRun(model, spec, protocol, dataset, method, seed, Path(run_dir), config,
                       settings, eval_options)  # fmt: skip


def train_and_collect(
    run: ProtocolRun,
    groups: Sequence[Sequence[ImageSample]],
    classnames: Sequence[str],
    measure: Callable[[ImageTextModel], dict[str, float]],
    *,
    eval_zeroshot: bool = True,
) -> dict:
    """Measure the zero-shot model, train (unless zero-shot), then measure each weight set.

    Returns ``metrics`` (of the reported weights), ``reported_weights``, ``by_weights``
    (zero-shot, final, averaged, wise as they apply) and ``steps``.
    """
    encoder = run.model.image_encoder
    pretrained = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    by_weights: dict[str, dict[str, float]] = {}
    if eval_zeroshot or run.settings.loss is None:
        by_weights["zeroshot"] = measure(run.model)
    steps = 0
    if run.settings.loss is not None:
        result = fit(run.model, groups, classnames, run.config, run.run_dir)
        steps = result.steps
        for name, state in trained_states(run, pretrained, result).items():
            encoder.load_state_dict(state)
            by_weights[name] = measure(run.model)
    reported = run.settings.reported
    return {
        "metrics": by_weights[reported],
        "reported_weights": reported,
        "by_weights": by_weights,
        "steps": steps,
    }


def trained_states(run: ProtocolRun, pretrained: dict, result) -> dict[str, dict]:
    """Final, averaged and (for WiSE-FT) interpolated image-encoder states of a fit."""
    states = {"final": result.final_state}
    if result.averaged_state is not None:
        states["averaged"] = result.averaged_state
    if run.settings.interpolation is not None:
        alpha = run.settings.interpolation
        states["wise"] = interpolate_weights(pretrained, result.final_state, alpha)
    return states


def write_summary(run_dir: Path, summary: dict) -> Path:
    """Write ``summary.json`` atomically and last, so its presence marks a finished run."""
    path = Path(run_dir) / "summary.json"
    write_json_atomic(path, summary)
    return path


def fresh_copy(model: ImageTextModel) -> ImageTextModel:
    """Return a deep copy for one run, so several runs can start from one loaded model."""
    return copy.deepcopy(model)
