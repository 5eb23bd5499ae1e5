"""Classify images with a pretrained or fine-tuned image-text model.

``Classifier`` wraps an ``ImageTextModel`` and ranks free-text class names for each image
by softmax over the model's logits ``scale * cos + bias``. Class names are turned into
prompts with templates, one (``"a photo of a {}."``) or several averaged
(``ENSEMBLE_TEMPLATES``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from clipood.data.samples import (
    ImageDecodeError,
    image_extensions_text,
    is_image_file,
    load_rgb,
)
from clipood.data.templates import DEFAULT_TEMPLATE
from clipood.models.base import ImageTextModel, ModelSpec

logger = logging.getLogger(__name__)

# Generic prompt wordings for classes of any domain; the class embedding is the
# normalised mean over all of them.
ENSEMBLE_TEMPLATES = (
    "a photo of a {}.",
    "a picture of the {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a low-resolution image of a {}.",
    "a black and white photo of a {}.",
    "a drawing of a {}.",
    "a rough sketch of a {}.",
    "a painting showing a {}.",
    "clip art of a {}.",
    "a cartoon of a {}.",
    "an image that contains a {}.",
)
DEFAULT_TOPK = 5

Ranking = list[tuple[str, float]]


@dataclass(frozen=True)
class FilePrediction:
    """The ranking for one image file, or the reason it could not be read."""

    path: Path
    ranking: Ranking | None
    error: str | None = None


class Classifier:
    """Rank class names for images with an image-text model.

    Args:
        model: any ``ImageTextModel``; its ``eval_transform`` preprocesses PIL images.
        classnames / templates: defaults for ``classify`` (a run's own classes and
            prompts when built with ``from_run``).
        device: where the forward passes run.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        model: ImageTextModel,
        *,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classnames = None if classnames is None else list(classnames)
        self.templates = tuple(templates)
        self.batch_size = batch_size

    @classmethod
    def from_run(
        cls,
        run_dir: Path | str,
        weights: str = "auto",
        device: str = "cpu",
        batch_size: int = 32,
    ) -> Classifier:
        """Load a training run folder's model with its trained weights, classes and
        prompt templates."""
        from clipood.engine.checkpoint import load_run_model, read_model_description

        description = read_model_description(Path(run_dir))
        model = load_run_model(Path(run_dir), weights=weights, device="cpu")
        return cls(
            model,
            classnames=description.get("classnames"),
            templates=description.get("templates") or (DEFAULT_TEMPLATE,),
            device=device,
            batch_size=batch_size,
        )

    @classmethod
    def from_model(
        cls, model: str | ModelSpec, device: str = "cpu", batch_size: int = 32
    ) -> Classifier:
        """Load a pretrained model by name (``offline``, ``open_clip:...``, ``hf:...``)."""
        from clipood.models.loading import load_model

        return cls(load_model(model), device=device, batch_size=batch_size)

    # --- classification ---------------------------------------------------------

    @torch.no_grad()
    def classify(
        self,
        images: Sequence[Image.Image] | torch.Tensor,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        topk: int = DEFAULT_TOPK,
    ) -> list[Ranking]:
        """Return, per image, the ``topk`` most likely ``(class name, probability)`` pairs
        in descending order of probability.

        ``images`` are PIL images (preprocessed with the model's ``eval_transform``) or an
        already preprocessed tensor ``(B, 3, H, W)``. Probabilities are a softmax over all
        classes, so each ranking sums to at most 1.
        """
        classnames = self._resolve_classnames(classnames)
        templates = check_templates(self.templates if templates is None else templates)
        check_topk(topk, len(classnames))
        class_embeddings = self.model.class_embeddings(classnames, templates).to(self.device)
        rankings: list[Ranking] = []
        for batch in self._batches(images):
            probabilities = self.model.logits(batch.to(self.device), class_embeddings).softmax(-1)
            scores, indices = probabilities.float().topk(topk, dim=-1)
            for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True):
                rankings.append(
                    [(classnames[i], s) for i, s in zip(row_indices, row_scores, strict=True)]
                )
        return rankings

    def classify_files(
        self,
        paths: Sequence[Path | str],
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        topk: int = DEFAULT_TOPK,
    ) -> list[FilePrediction]:
        """Classify image files in order. A file that cannot be decoded is logged as a
        warning and gets a ``FilePrediction`` with ``ranking=None`` and the error message,
        so one bad file does not stop the rest."""
        classnames = self._resolve_classnames(classnames)
        check_topk(topk, len(classnames))
        results: list[FilePrediction] = []
        for start in range(0, len(paths), self.batch_size):
            chunk = [Path(path) for path in paths[start : start + self.batch_size]]
            chunk_results: list[FilePrediction | None] = [None] * len(chunk)
            loaded: list[tuple[int, Image.Image]] = []
            for index, path in enumerate(chunk):
                try:
                    loaded.append((index, load_rgb(path)))
                except ImageDecodeError as err:
                    logger.warning("skipping unreadable image: %s", err)
                    chunk_results[index] = FilePrediction(path, None, str(err))
            if loaded:
                images = [image for _, image in loaded]
                rankings = self.classify(images, classnames, templates, topk)
                for (index, _), ranking in zip(loaded, rankings, strict=True):
                    chunk_results[index] = FilePrediction(chunk[index], ranking)
            results.extend(result for result in chunk_results if result is not None)
        return results

    def _resolve_classnames(self, classnames: Sequence[str] | None) -> list[str]:
        if classnames is None:
            if self.classnames is None:
                raise ValueError("no class names given; pass classnames")
            classnames = self.classnames
        return check_classnames(classnames)

    def _batches(self, images: Sequence[Image.Image] | torch.Tensor):
        if isinstance(images, torch.Tensor):
            tensor = images.unsqueeze(0) if images.dim() == 3 else images
            if tensor.dim() != 4 or tensor.shape[1] != 3:
                raise ValueError(
                    f"image tensor must have shape (B, 3, H, W), got {tuple(images.shape)}"
                )
            for start in range(0, len(tensor), self.batch_size):
                yield tensor[start : start + self.batch_size]
            return
        if len(images) == 0:
            raise ValueError("no images to classify")
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            yield torch.stack([self.model.eval_transform(image.convert("RGB")) for image in chunk])


# --- input checks --------------------------------------------------------------------


def check_classnames(classnames: Sequence[str]) -> list[str]:
    """Return the class names stripped of surrounding spaces; raise ValueError for an
    empty list, an empty name or a duplicate."""
    names = [str(name).strip() for name in classnames]
    if not names:
        raise ValueError("no class names given; pass at least one")
    empty = [index for index, name in enumerate(names) if not name]
    if empty:
        raise ValueError(f"class name number {empty[0] + 1} is empty; remove it")
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}; list each class once")
    return names


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Return the templates; raise ValueError unless each has exactly one ``{}``."""
    templates = tuple(templates)
    if not templates:
        raise ValueError("no prompt templates given")
    for template in templates:
        rest = template.replace("{}", "", 1)
        if template.count("{}") != 1 or "{" in rest or "}" in rest:
            raise ValueError(
                f"prompt template {template!r} must contain exactly one '{{}}' (where the "
                "class name goes) and no other braces"
            )
    return templates


def check_topk(topk: int, num_classes: int) -> None:
    if not 1 <= topk <= num_classes:
        raise ValueError(
            f"topk must be between 1 and the number of classes ({num_classes}), got {topk}"
        )


def find_images(folder: Path | str) -> list[Path]:
    """Return the image files under ``folder`` (recursively, sorted), or ``[folder]`` when
    it is a single file.

    Files and folders whose names start with a dot are skipped. The extensions are those
    that ``clipood train`` reads (``clipood.data.samples.IMAGE_EXTENSIONS``).
    """
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    paths = sorted(
        path
        for path in folder.rglob("*")
        if is_image_file(path)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not paths:
        raise ValueError(
            f"no image files found in {folder} (searched recursively for {image_extensions_text()})"
        )
    return paths
