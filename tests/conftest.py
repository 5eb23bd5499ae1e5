"""Shared fixtures: a tiny real image-text model and a tiny DomainBed folder tree.

The tiny model is built from ordinary torch modules (a small convolutional net with
BatchNorm and dropout as the image tower, a hashed-token ``EmbeddingBag`` as the frozen
text tower) so training and evaluation run in well under a second per step on CPU.
Subprocess tests import ``build_tiny_model`` and ``write_tiny_domainbed`` from this file.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from clipood.models.base import ImageTextModel, ModelSpec

EMBED_DIM = 16
IMAGE_SIZE = 32
VOCAB_SIZE = 257
TINY_DOMAINS = ("clipart", "photo", "sketch")
TINY_CLASSES = ("bird", "car", "dog")


class HashedTextTower(nn.Module):
    """Mean of hashed word embeddings: deterministic, frozen, dependency free."""

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        self.embedding = nn.EmbeddingBag(VOCAB_SIZE, dim, mode="mean")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            words = text.lower().replace(".", " ").split() or [""]
            ids.extend(zlib.crc32(word.encode()) % VOCAB_SIZE for word in words)
        return self.embedding(torch.tensor(ids), torch.tensor(offsets))


class TinyImageTextModel(ImageTextModel):
    def encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.text_encoder.embedding.weight.device
        return self.text_encoder.to(device)(list(texts))


def tiny_image_tower(dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16, EMBED_DIM),
    )


def build_tiny_model(seed: int = 0, dropout: float = 0.1) -> TinyImageTextModel:
    """Build the tiny model with weights fixed by ``seed`` and non-trivial BN statistics."""
    torch.manual_seed(seed)
    image_tower = tiny_image_tower(dropout)
    for module in image_tower.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    train_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(IMAGE_SIZE, scale=(0.7, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    eval_transform = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return TinyImageTextModel(
        image_tower,
        HashedTextTower(),
        logit_scale=10.0,
        logit_bias=None,
        train_transform=train_transform,
        eval_transform=eval_transform,
        spec=ModelSpec("tiny", "tiny"),
    )


def write_tiny_domainbed(
    root: Path, images_per_class: int = 6, domains=TINY_DOMAINS, classes=TINY_CLASSES
) -> Path:
    """Write ``root/DOMAIN/CLASS/NNN.png`` images whose colour depends on the class and
    whose texture depends on the domain, so a model can learn something in a few steps."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(domains):
        for c, classname in enumerate(classes):
            folder = root / domain / classname
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                pixels = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 40, dtype=np.float64)
                pixels[..., c % 3] = 200
                pixels[:: d + 2, :, :] *= 0.5
                pixels += rng.normal(0, 20, pixels.shape)
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_model() -> TinyImageTextModel:
    return build_tiny_model()


@pytest.fixture
def tiny_domainbed(tmp_path: Path) -> Path:
    return write_tiny_domainbed(tmp_path / "tiny")
