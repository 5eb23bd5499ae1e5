"""Labelled image records and the torch ``Dataset`` that reads them.

Every layout (DomainBed folders, CoOp split files, image folders, CSV manifests)
is read into a list of ``ImageSample`` records plus a list of class names; protocols
split those lists, and ``ImageDataset`` turns a list into tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset


@dataclass(frozen=True)
class ImageSample:
    """One labelled image: its file, class index and domain name (``""`` if none)."""

    path: Path
    label: int
    domain: str = ""


class ImageDecodeError(RuntimeError):
    """An image file exists but cannot be decoded."""


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, compositing transparency onto white."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageDecodeError(
            f"cannot decode image {path}: {err}; remove or replace the file"
        ) from err


class ImageDataset(Dataset):
    """Read ``ImageSample`` records as ``(image_tensor, label)`` pairs."""

    def __init__(
        self, samples: Sequence[ImageSample], transform: Callable[[Image.Image], torch.Tensor]
    ):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(load_rgb(sample.path)), sample.label
