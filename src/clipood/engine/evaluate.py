"""Zero-shot style classification accuracy of an image-text model on labelled images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clipood.data.samples import ImageDataset, ImageSample
from clipood.engine.precision import autocast
from clipood.models.base import ImageTextModel


@dataclass
class EvalResult:
    """Top-1 accuracy (0..1) with its counts; ``per_class`` maps label -> (correct, total)."""

    accuracy: float
    correct: int
    total: int
    per_class: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total}


def restrict_to_classes(
    samples: Sequence[ImageSample], class_subset: Sequence[int], num_classes: int
) -> list[ImageSample]:
    """Keep samples whose label is in ``class_subset`` (validated against ``num_classes``)."""
    subset = list(class_subset)
    if not subset:
        raise ValueError("class_subset is empty; pass at least one class index")
    invalid = [c for c in subset if not 0 <= c < num_classes]
    if invalid:
        raise ValueError(f"class_subset has indices {invalid} outside 0..{num_classes - 1}")
    selected = set(subset)
    return [s for s in samples if s.label in selected]


@torch.no_grad()
def evaluate(
    model: ImageTextModel,
    samples: Sequence[ImageSample],
    classnames: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}.",),
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
    class_subset: Sequence[int] | None = None,
    precision: str = "fp32",
    progress: bool | None = None,
) -> EvalResult:
    """Classify ``samples`` against the class-name prompts and count correct predictions.

    With ``class_subset`` only samples of those classes are kept and each is classified
    among the subset's classes only. ``progress=None`` shows a bar only on a terminal.
    The model is left in eval mode on ``device``.
    """
    if class_subset is not None:
        samples = restrict_to_classes(samples, class_subset, len(classnames))
    if not samples:
        what = "the class subset" if class_subset is not None else "the sample list"
        raise ValueError(f"cannot evaluate: {what} has no images")
    classes = list(class_subset) if class_subset is not None else list(range(len(classnames)))
    model.to(device).eval()
    text = model.class_embeddings(classnames, templates).to(device)[classes]
    to_subset = torch.full((len(classnames),), -1, dtype=torch.long)
    to_subset[torch.tensor(classes)] = torch.arange(len(classes))

    loader = DataLoader(
        ImageDataset(samples, model.eval_transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    correct_per_class = torch.zeros(len(classnames), dtype=torch.long)
    total_per_class = torch.zeros(len(classnames), dtype=torch.long)
    disable = None if progress is None else not progress
    for images, labels in tqdm(loader, desc="evaluate", leave=False, disable=disable):
        with autocast(precision, device):
            logits = model.logits(images.to(device), text)
        predicted = logits.argmax(dim=-1).cpu()
        hits = predicted == to_subset[labels]
        correct_per_class.index_add_(0, labels, hits.long())
        total_per_class.index_add_(0, labels, torch.ones_like(labels))

    per_class = {
        c: (int(correct_per_class[c]), int(total_per_class[c]))
        for c in classes
        if total_per_class[c] > 0
    }
    correct, total = int(correct_per_class.sum()), int(total_per_class.sum())
    return EvalResult(correct / total, correct, total, per_class)
