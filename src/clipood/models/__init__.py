"""Image-text model backends behind one interface, and how to load them by name."""

from clipood.models.base import ImageTextModel, ModelSpec, prompt_text
from clipood.models.defaults import HyperParameters, defaults_for
from clipood.models.loading import load_model, parse_model_spec

__all__ = [
    "HyperParameters",
    "ImageTextModel",
    "ModelSpec",
    "defaults_for",
    "load_model",
    "parse_model_spec",
    "prompt_text",
]
