"""``offline-domains``: the ten animal-mnist animals in three domains (domain shift).

Domains, each with images no other domain uses:

- ``clipart``: real colour and line drawings, namely openclipart animal clip art plus the
  Noto Color Emoji and Symbola glyphs of the same animals. Small and unbalanced because
  the clip art contains few pictures of most of these animals (none of a zebra).
- ``silhouette``: real animal-mnist silhouettes, dark on white, upscaled from 28 px.
- ``outline``: derived, the edge sketch of animal-mnist silhouettes that ``silhouette``
  does not use.
"""

from __future__ import annotations

from clipood.data.benchmarks import render
from clipood.data.benchmarks.glyphs import ANIMAL_CHARACTERS, characters_in_font
from clipood.data.benchmarks.mnist_like import ANIMAL_CLASSES, pick_per_class, read_animal_mnist
from clipood.data.benchmarks.openclipart import list_animals
from clipood.data.benchmarks.plan_helpers import NameRegistry, seeded_sample, source_records
from clipood.data.benchmarks.sources import SourcePaths
from clipood.data.benchmarks.writer import BuildPlan, PlannedImage

NAME = "offline-domains"
PACKAGES = (
    "animal-mnist",
    "openclipart-png",
    "fonts-noto-color-emoji",
    "fonts-symbola",
)
DOMAINS = {
    "clipart": "real: openclipart animal clip art (labelled by folder and file-name words) "
    "plus Noto Color Emoji and Symbola glyphs of the same animals",
    "silhouette": "real: animal-mnist silhouettes, inverted to dark on white, upscaled",
    "outline": "derived: edge sketch of animal-mnist silhouettes not used in 'silhouette'",
}


def _clipart_images(sources, names, size, cap, seed) -> list[PlannedImage]:
    planned = []
    animals = list_animals(sources.require("openclipart"))
    png_root = sources.openclipart
    for animal in ANIMAL_CLASSES:
        for item in seeded_sample(animals[animal], cap, seed, f"clipart/{animal}"):
            planned.append(PlannedImage(
                "clipart", animal, names.claim("clipart", animal, f"openclipart-{item.path.stem}"),
                "openclipart-png", item.path.relative_to(png_root).as_posix(), "original",
                render.file_renderer(item.path, size, "original"),
            ))  # fmt: skip
    return planned


def _glyph_images(sources, names, size) -> list[PlannedImage]:
    planned = []
    fonts = (
        ("fonts-noto-color-emoji", sources.require("noto_emoji"), True),
        ("fonts-symbola", sources.require("symbola"), False),
    )
    for package, font, colour in fonts:
        for animal in ANIMAL_CLASSES:
            for character in characters_in_font(font, ANIMAL_CHARACTERS[animal]):
                code = f"U+{ord(character):04X}"
                planned.append(PlannedImage(
                    "clipart", animal, names.claim("clipart", animal, f"{package}-{code}"),
                    package, code, "original",
                    render.glyph_renderer(font, character, colour, size),
                ))  # fmt: skip
    return planned


def _animal_mnist_images(sources, names, size, per_class, seed) -> list[PlannedImage]:
    images, labels = read_animal_mnist(sources.require("animal_mnist"))
    planned = []
    for domain, style, skip in (("silhouette", "original", 0), ("outline", "sketch", per_class)):
        for label, indices in pick_per_class(labels, per_class, seed, skip=skip).items():
            animal = ANIMAL_CLASSES[label]
            for index in indices:
                planned.append(PlannedImage(
                    domain, animal, names.claim(domain, animal, f"animal-mnist-{index:05d}"),
                    "animal-mnist", f"index {index}", style,
                    render.grey_renderer(images[index], size, style),
                ))  # fmt: skip
    return planned


def plan(
    sources: SourcePaths,
    *,
    image_size: int = 160,
    per_class: int = 50,
    clipart_cap: int = 60,
    seed: int = 0,
) -> BuildPlan:
    """Plan the benchmark; ``per_class`` sets the animal-mnist images per class and domain."""
    names = NameRegistry()
    images = (
        _clipart_images(sources, names, image_size, clipart_cap, seed)
        + _glyph_images(sources, names, image_size)
        + _animal_mnist_images(sources, names, image_size, per_class, seed)
    )
    recipe = {
        "benchmark": NAME,
        "builder_version": 3,
        "image_size": image_size,
        "per_class": per_class,
        "clipart_cap": clipart_cap,
        "seed": seed,
        "source_versions": {p: sources.versions.get(p, "unknown") for p in PACKAGES},
    }
    return BuildPlan(images, DOMAINS, recipe, source_records(sources, PACKAGES))
