"""Load an ``ImageTextModel`` from a model string or ``ModelSpec``.

Model strings:

- ``offline`` : the offline default model (EfficientNet-Lite0 + MiniLM towers).
- ``open_clip:NAME[:PRETRAINED]`` : an OpenCLIP architecture from
  ``open_clip.list_models()`` with a pretrained tag (``openai``, ``laion2b_s34b_b88k``)
  or a local checkpoint file.
- ``hf:ID_OR_FOLDER`` : a Hugging Face ``transformers`` CLIP or SigLIP checkpoint.
"""

from __future__ import annotations

import importlib

import torch

from clipood.models.base import ImageTextModel, ModelSpec

# Backends are imported on first use so that optional heavy libraries load only when asked.
BACKENDS = {
    "offline": "clipood.models.offline",
    "open_clip": "clipood.models.open_clip_backend",
    "hf": "clipood.models.hf_backend",
}
ALIASES = {"openclip": "open_clip", "open-clip": "open_clip", "huggingface": "hf", "hf-hub": "hf"}


def parse_model_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse ``backend:name[:pretrained]`` into a ``ModelSpec``."""
    if isinstance(text, ModelSpec):
        return text
    backend, _, rest = text.partition(":")
    backend = ALIASES.get(backend, backend)
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown model {text!r}: expected 'offline', 'open_clip:NAME[:PRETRAINED]' "
            f"or 'hf:ID_OR_FOLDER'"
        )
    if backend == "offline":
        return ModelSpec("offline", rest or "default")
    if not rest:
        raise ValueError(f"model {text!r} names no model after '{backend}:'")
    if backend == "hf":
        return ModelSpec("hf", rest, rest)
    name, _, pretrained = rest.partition(":")
    return ModelSpec("open_clip", name, pretrained or None)


def load_model(
    spec: str | ModelSpec, device: str | torch.device = "cpu", **options
) -> ImageTextModel:
    """Build the pretrained model that ``spec`` names, on ``device``, in float32."""
    spec = parse_model_spec(spec)
    module = importlib.import_module(BACKENDS[spec.backend])
    model = module.load(spec, **options)
    return model.to(device)
