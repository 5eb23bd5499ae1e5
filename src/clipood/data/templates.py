"""Prompt templates per dataset for zero-shot classification and fine-tuning.

The open-class datasets use one hand-written template each, the ones CoOp
(Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022) evaluates
with; every other dataset uses ``DEFAULT_TEMPLATE``. ``{}`` is replaced by the class
name after ``clipood.models.prompt_text`` has turned underscores into spaces.
"""

from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

# Keyed by the dataset names of ``clipood.data.coop.COOP_DATASETS``.
DATASET_TEMPLATES: dict[str, str] = {
    "ImageNet": DEFAULT_TEMPLATE,
    "Caltech101": DEFAULT_TEMPLATE,
    "OxfordPets": "a photo of a {}, a type of pet.",
    "StanfordCars": DEFAULT_TEMPLATE,
    "Flowers102": "a photo of a {}, a type of flower.",
    "Food101": "a photo of {}, a type of food.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "SUN397": DEFAULT_TEMPLATE,
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "UCF101": "a photo of a person doing {}.",
}

# Other names the same datasets go by (CoOp's class names and file names use these).
TEMPLATE_ALIASES = {"OxfordFlowers": "Flowers102", "DescribableTextures": "DTD"}


def templates_for(dataset: str | None) -> tuple[str, ...]:
    """Return the prompt templates for a dataset name (case-insensitive).

    Unknown names and ``None`` get ``(DEFAULT_TEMPLATE,)``, since custom data has no
    dataset-specific wording.
    """
    if dataset is None:
        return (DEFAULT_TEMPLATE,)
    names = {name.lower(): name for name in DATASET_TEMPLATES}
    names.update({alias.lower(): name for alias, name in TEMPLATE_ALIASES.items()})
    key = names.get(dataset.lower())
    return (DATASET_TEMPLATES[key],) if key else (DEFAULT_TEMPLATE,)
