"""Fit the offline model's text projection from ImageNet class names (DeViSE-style).

The offline model pairs an ImageNet-trained image tower with a sentence encoder that
never saw images. A linear map ``P`` (sentence space -> image feature space) joins them:
prompts of ImageNet class ``k`` ("a photo of a {synonym}.") are trained to land on the
normalised classifier row ``W_k`` of the image tower, with cross-entropy over the
classifier rows at a fixed cosine scale. Since the image tower's classifier scores an
image by ``f . W_k``, a prompt mapped near ``W_k`` scores images of class ``k`` highly,
so no image-caption pairs are needed.

Everything here works on tensors; reading the towers and writing the cache is done by
``clipood.models.offline``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo
from tqdm.auto import tqdm

# Ten prompt templates. Each is filled with every ImageNet synonym of a class.
TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a drawing of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
)

# Classes left out of the alignment check fit: every tenth class, so the held-out set
# covers all parts of the ImageNet label list (dogs, birds, objects, food...).
HELD_OUT_CLASSES = tuple(range(5, 1000, 10))


@dataclass(frozen=True)
class FitSettings:
    """Optimisation settings of the projection fit.

    ``scale`` multiplies the prompt-to-row cosines inside the cross-entropy. ``threads``
    fixes the CPU thread count during the fit, because the summation order (and so the
    last bits of the result) depends on it.
    """

    steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.01
    scale: float = 30.0
    seed: int = 0
    threads: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def imagenet_synonyms() -> list[list[str]]:
    """Return the WordNet synonyms of each ImageNet-1k class, in timm's class order."""
    descriptions = ImageNetInfo("imagenet-1k").label_descriptions()
    return [description.split(", ") for description in descriptions]


def imagenet_prompts(
    templates: Sequence[str], classes: Sequence[int] | None = None
) -> tuple[list[str], torch.Tensor]:
    """Return every template filled with every synonym of the given classes, and the
    class index of each prompt (all 1,000 classes when ``classes`` is None)."""
    synonyms = imagenet_synonyms()
    chosen = range(len(synonyms)) if classes is None else classes
    prompts: list[str] = []
    labels: list[int] = []
    for index in chosen:
        for name in synonyms[index]:
            prompts.extend(template.format(name) for template in templates)
            labels.extend([index] * len(templates))
    return prompts, torch.tensor(labels, dtype=torch.long)


@contextlib.contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Run the block with deterministic kernels and a fixed thread count, then restore."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def fit_projection(
    sentences: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    settings: FitSettings,
    description: str = "fit projection",
) -> torch.Tensor:
    """Fit ``P`` so that ``P @ sentences[i]`` points at ``rows[labels[i]]``.

    Args:
        sentences: L2-normalised sentence embeddings ``(N, Dt)``.
        labels: index into ``rows`` of each sentence ``(N,)``.
        rows: classifier rows ``(K, Di)``; normalised here.
        settings: optimisation settings.

    Returns:
        The projection weight ``(Di, Dt)``, as stored in ``nn.Linear(Dt, Di).weight``.
    """
    targets = F.normalize(rows.float(), dim=-1)
    with deterministic_cpu(settings.threads):
        generator = torch.Generator().manual_seed(settings.seed)
        projection = torch.nn.Linear(sentences.shape[1], targets.shape[1], bias=False)
        with torch.no_grad():
            bound = sentences.shape[1] ** -0.5
            projection.weight.uniform_(-bound, bound, generator=generator)
        optimizer = torch.optim.AdamW(
            projection.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        for _ in tqdm(
            range(settings.steps), desc=description, unit="step", leave=False, disable=None
        ):
            batch = torch.randint(len(sentences), (settings.batch_size,), generator=generator)
            mapped = F.normalize(projection(sentences[batch]), dim=-1)
            loss = F.cross_entropy(settings.scale * mapped @ targets.T, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return projection.weight.detach().clone()


@torch.no_grad()
def retrieval_accuracy(
    weight: torch.Tensor,
    sentences: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Return the top-k accuracy of retrieving each sentence's row among ``rows``.

    ``labels`` index into ``rows``, so callers pass only the candidate rows (for the
    held-out check, the rows of the held-out classes).
    """
    mapped = F.normalize(sentences @ weight.T, dim=-1)
    scores = mapped @ F.normalize(rows.float(), dim=-1).T
    ranked = scores.topk(max(ks), dim=-1).indices
    hits = ranked == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=-1).float().mean()) for k in ks}


@dataclass(frozen=True)
class BuildRecipe:
    """What one build fits: its prompts, its held-out check and its optimisation.

    ``classes`` are the ImageNet classes whose prompts and rows enter the final fit.
    ``held_out`` is a subset of them that a first fit leaves out, to measure how well
    the projection generalises to class names it never saw.
    """

    name: str
    templates: tuple[str, ...]
    classes: tuple[int, ...]
    held_out: tuple[int, ...]
    settings: FitSettings

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "quick": self.quick,
            "templates": list(self.templates),
            "num_classes": len(self.classes),
            "held_out_classes": list(self.held_out),
            "fit": self.settings.to_dict(),
        }


DEFAULT_RECIPE = BuildRecipe(
    name="default",
    templates=TEMPLATES,
    classes=tuple(range(1000)),
    held_out=HELD_OUT_CLASSES,
    settings=FitSettings(),
)
# A seconds-long build for smoke tests: 40 classes, one template, 60 steps. Its
# alignment numbers are far below the default build's and mean little.
QUICK_RECIPE = BuildRecipe(
    name="quick",
    templates=TEMPLATES[:1],
    classes=tuple(range(0, 1000, 25)),
    held_out=tuple(range(0, 1000, 100)),
    settings=FitSettings(steps=60, batch_size=64),
)
RECIPES = {recipe.name: recipe for recipe in (DEFAULT_RECIPE, QUICK_RECIPE)}


def select_classes(
    labels: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a mask of the prompts whose label is in ``classes`` and those labels
    re-indexed to positions in ``classes`` (so they index ``rows[classes]``)."""
    size = max(int(labels.max()), max(classes)) + 1
    lookup = torch.full((size,), -1, dtype=torch.long)
    lookup[torch.tensor(list(classes), dtype=torch.long)] = torch.arange(len(classes))
    positions = lookup[labels]
    mask = positions >= 0
    return mask, positions[mask]


@torch.no_grad()
def encode_sentences(
    embed: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    threads: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """Return ``embed`` applied to ``texts`` in batches, with a progress bar.

    Texts are batched in order of length so that each batch carries little padding.
    """
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunks = [
            embed([texts[index] for index in order[start : start + batch_size]])
            for start in tqdm(
                range(0, len(texts), batch_size),
                desc="encode prompts",
                unit="batch",
                leave=False,
                disable=None,
            )
        ]
    finally:
        torch.set_num_threads(previous_threads)
    embeddings = torch.empty(len(texts), chunks[0].shape[1])
    embeddings[torch.tensor(order)] = torch.cat(chunks)
    return embeddings


def fit_recipe(
    recipe: BuildRecipe, rows: torch.Tensor, embed: Callable[[list[str]], torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Fit the projection of ``recipe``; return its weight and the alignment metrics.

    Args:
        recipe: prompts, classes and settings of the build.
        rows: the image tower's ImageNet classifier weight ``(1000, Di)``.
        embed: maps a list of prompts to normalised sentence embeddings.

    A first fit leaves the held-out classes out (their prompts and their rows) and
    measures how often their prompts retrieve their own row among the held-out rows.
    The returned weight comes from a second fit on all classes of the recipe.
    """
    settings = recipe.settings
    prompts, labels = imagenet_prompts(recipe.templates, recipe.classes)
    sentences = encode_sentences(embed, prompts, settings.threads)

    held_out = list(recipe.held_out)
    seen = [c for c in recipe.classes if c not in set(held_out)]
    seen_mask, seen_labels = select_classes(labels, seen)
    held_mask, held_labels = select_classes(labels, held_out)
    held_out_weight = fit_projection(
        sentences[seen_mask], seen_labels, rows[seen], settings, "fit without held-out"
    )
    held_out_metrics = retrieval_accuracy(
        held_out_weight, sentences[held_mask], held_labels, rows[held_out]
    )
    metrics = {f"held_out_{name}": value for name, value in held_out_metrics.items()}
    metrics["held_out_chance_top1"] = 1.0 / len(held_out)
    metrics["num_prompts"] = len(prompts)

    classes = list(recipe.classes)
    _, all_labels = select_classes(labels, classes)
    weight = fit_projection(sentences, all_labels, rows[classes], settings, "fit all classes")
    train_metrics = retrieval_accuracy(weight, sentences, all_labels, rows[classes])
    metrics.update({f"train_{name}": value for name, value in train_metrics.items()})
    return weight, metrics
