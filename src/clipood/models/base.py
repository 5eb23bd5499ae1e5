"""The image-text model interface that training, evaluation and prediction use.

An ``ImageTextModel`` pairs a trainable image tower with a frozen text tower that
share one embedding space. Fine-tuning updates ``image_encoder`` only, so that module
is what the optimiser, the weight averagers, checkpoints and exports see. Backends
(offline, OpenCLIP, Hugging Face) subclass it and implement ``encode_text_batch``
and ``export``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Transform = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a model: backend, model name and pretrained source.

    ``pretrained`` is an OpenCLIP tag (``openai``), a local file or folder, or a hub id.
    """

    backend: str
    name: str
    pretrained: str | None = None
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "name": self.name,
            "pretrained": self.pretrained,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(data["backend"], data["name"], data.get("pretrained"), data.get("options", {}))

    def __str__(self) -> str:
        parts = [self.backend, self.name] + ([self.pretrained] if self.pretrained else [])
        return ":".join(parts)


def is_norm_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm)


class ImageTextModel(nn.Module):
    """A trainable image tower and a frozen text tower with a shared embedding space.

    Args:
        image_encoder: maps a batch of preprocessed images ``(B, 3, H, W)`` to
            embeddings ``(B, D)``; all of its parameters are trained.
        text_encoder: the frozen text tower; the subclass's ``encode_text_batch`` uses it.
        logit_scale: the pretrained temperature ``tau`` (100 for OpenAI CLIP).
        logit_bias: added to every logit by SigLIP-style models, else ``None``.
        train_transform / eval_transform: PIL image to tensor, the model's own.
        spec: how to rebuild the pretrained model.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        logit_scale: float,
        logit_bias: float | None,
        train_transform: Transform,
        eval_transform: Transform,
        spec: ModelSpec,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.spec = spec
        self.text_encoder.requires_grad_(False)
        self._class_cache: dict[tuple, torch.Tensor] = {}

    # --- images -----------------------------------------------------------------

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.image_encoder(images)
        return F.normalize(features, dim=-1) if normalize else features

    def train(self, mode: bool = True) -> ImageTextModel:
        """Set train mode on the image tower but keep its normalisation layers in eval mode,
        so BatchNorm uses and keeps its running statistics. The text tower stays in eval."""
        super().train(mode)
        self.text_encoder.eval()
        if mode:
            for module in self.image_encoder.modules():
                if is_norm_layer(module):
                    module.eval()
        return self

    # --- text -------------------------------------------------------------------

    def encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed one batch of strings, unnormalised, shape ``(len(texts), D)``."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_text(
        self, texts: Sequence[str], normalize: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        was_training = self.text_encoder.training
        self.text_encoder.eval()
        chunks = [
            self.encode_text_batch(list(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        self.text_encoder.train(was_training)
        features = torch.cat(chunks).float()
        return F.normalize(features, dim=-1) if normalize else features

    @torch.no_grad()
    def class_embeddings(
        self, classnames: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)
    ) -> torch.Tensor:
        """Return L2-normalised class embeddings ``(K, D)``: the normalised mean over
        templates of each class's normalised prompt embeddings. Cached per class list
        and template list, since the text tower is frozen."""
        key = (tuple(classnames), tuple(templates))
        if key not in self._class_cache:
            prompts = [t.format(prompt_text(name)) for name in classnames for t in templates]
            embeddings = self.encode_text(prompts).view(len(classnames), len(templates), -1)
            mean = F.normalize(embeddings.mean(dim=1), dim=-1)
            self._class_cache[key] = mean
        return self._class_cache[key]

    # --- logits -----------------------------------------------------------------

    def logits(self, images: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits ``tau * cos + bias`` of images against class embeddings."""
        image_embeddings = self.encode_image(images).float()
        logits = self.logit_scale * image_embeddings @ class_embeddings.to(image_embeddings).T
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits

    # --- persistence ------------------------------------------------------------

    def export(self, image_state: dict[str, torch.Tensor], destination: Path) -> Path:
        """Write the full model with the given image-tower weights in the backend's
        native format, loadable without clipood; return the written path."""
        raise NotImplementedError(f"{type(self).__name__} does not support export")


def prompt_text(name: str) -> str:
    """Turn a class folder name into prompt text: underscores become spaces."""
    return name.replace("_", " ").strip()
