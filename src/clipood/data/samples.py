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
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

# File extensions that every loader (DomainBed folders, image folders, ``clipood predict``)
# reads as images: torchvision's ``ImageFolder`` set plus GIF, which Pillow also decodes.
# Matched case-insensitively.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(IMG_EXTENSIONS) | {".gif"}


def is_image_file(path: Path) -> bool:
    """Return whether ``path`` is a file with an image extension and a visible name (one
    that does not start with a dot)."""
    return (
        path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )


def image_extensions_text() -> str:
    """Return the image extensions as a sorted, comma-separated list for messages."""
    return ", ".join(sorted(IMAGE_EXTENSIONS))


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


def check_images(samples: Sequence[ImageSample], max_listed: int = 5) -> None:
    """Verify every image file before a run starts, so a corrupt file fails the run at
    once rather than hours in.

    Uses Pillow's ``verify()``, which reads each file and checks its structure (PNG
    chunk checksums, for example) without decoding the pixels.

    Raises:
        ImageDecodeError: naming up to ``max_listed`` bad files and how many there are.
    """
    bad: list[str] = []
    for sample in tqdm(samples, desc="check images", unit="image", leave=False, disable=None):
        try:
            with Image.open(sample.path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            bad.append(f"{sample.path} ({err})")
    if bad:
        listed = "; ".join(bad[:max_listed])
        raise ImageDecodeError(
            f"{len(bad)} of {len(samples)} images cannot be read, for example: {listed}; "
            "remove or replace them and run again"
        )
