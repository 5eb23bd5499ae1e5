"""``offline-wild``: many clip-art classes in three styles (domain shift plus open classes).

Each class's openclipart files are shuffled with the seed, capped, and dealt in turn to
the three domains, so no source picture appears in two domains:

- ``clipart``: real, the clip art itself on white.
- ``sketch``: derived, edge lines of the clip art.
- ``silhouette``: derived, the object's alpha mask (or its non-white pixels) filled black.

Classes are sorted by name, so a base/new split by class index mixes topics.
"""

from __future__ import annotations

from clipood.data.benchmarks import render
from clipood.data.benchmarks.openclipart import WILD_CLASSES, list_folder_classes
from clipood.data.benchmarks.plan_helpers import NameRegistry, seeded_sample, source_records
from clipood.data.benchmarks.sources import SourcePaths
from clipood.data.benchmarks.writer import BuildPlan, PlannedImage

NAME = "offline-wild"
PACKAGES = ("openclipart-png",)
DOMAINS = {
    "clipart": "real: openclipart clip art, one third of each class's pictures",
    "sketch": "derived: edge sketch of another third of the clip art",
    "silhouette": "derived: filled alpha mask of the last third of the clip art",
}
_STYLE_OF = {"clipart": "original", "sketch": "sketch", "silhouette": "silhouette"}


def plan(
    sources: SourcePaths,
    *,
    image_size: int = 160,
    per_class: int = 120,
    seed: int = 0,
    classes: dict[str, tuple[str, ...]] | None = None,
) -> BuildPlan:
    """Plan the benchmark; ``per_class`` caps the clip art per class before dealing."""
    png_root = sources.require("openclipart")
    listed = list_folder_classes(png_root, classes or WILD_CLASSES, visible_only=True)
    names = NameRegistry()
    domains = list(DOMAINS)
    images = []
    for classname in sorted(listed):
        chosen = seeded_sample(listed[classname], per_class, seed, f"wild/{classname}")
        for i, item in enumerate(chosen):
            domain = domains[i % len(domains)]
            style = _STYLE_OF[domain]
            images.append(PlannedImage(
                domain, classname, names.claim(domain, classname, item.path.stem),
                "openclipart-png", item.path.relative_to(png_root).as_posix(), style,
                render.file_renderer(item.path, image_size, style),
            ))  # fmt: skip
    recipe = {
        "benchmark": NAME,
        "builder_version": 3,
        "image_size": image_size,
        "per_class": per_class,
        "seed": seed,
        "classes": {name: list(folders) for name, folders in (classes or WILD_CLASSES).items()},
        "source_versions": {p: sources.versions.get(p, "unknown") for p in PACKAGES},
    }
    return BuildPlan(images, DOMAINS, recipe, source_records(sources, PACKAGES))
