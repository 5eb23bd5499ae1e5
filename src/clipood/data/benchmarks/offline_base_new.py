"""``offline-base-new``: every nameable class of the sources in one domain (open classes).

Classes: the openclipart folder classes, Fashion-MNIST's ten clothing classes (test part)
and animal-mnist's ten animals. ``bird`` exists in both openclipart and animal-mnist and
gets pictures from both. The single domain is ``all``.

Besides the tree, the build writes ``split_zhou_OfflineBaseNew.json`` in the CoOp split
format: ``{"train"|"val"|"test": [[relpath, label, classname], ...]}`` with ``relpath``
relative to the benchmark folder and ``label`` the index of the class among the sorted
class names (the order ``load_domainbed`` uses). Each class is split at random into test
(half, rounded down), validation (a tenth, at least one) and train (the rest).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from clipood.data.benchmarks import render
from clipood.data.benchmarks.mnist_like import (
    ANIMAL_CLASSES,
    FASHION_CLASSES,
    pick_per_class,
    read_animal_mnist,
    read_fashion_mnist,
)
from clipood.data.benchmarks.openclipart import FOLDER_CLASSES, list_folder_classes
from clipood.data.benchmarks.plan_helpers import NameRegistry, seeded_sample, source_records
from clipood.data.benchmarks.sources import SourcePaths
from clipood.data.benchmarks.writer import BuildPlan, PlannedImage

NAME = "offline-base-new"
DOMAIN = "all"
SPLIT_FILE = "split_zhou_OfflineBaseNew.json"
PACKAGES = ("openclipart-png", "dataset-fashion-mnist", "animal-mnist")
DOMAINS = {
    DOMAIN: "real: openclipart folder classes, Fashion-MNIST test images (dark on white, "
    "upscaled) and animal-mnist silhouettes (dark on white, upscaled)"
}


def _clipart(sources, names, size, per_class, seed, classes) -> list[PlannedImage]:
    png_root = sources.require("openclipart")
    planned = []
    for classname, items in sorted(
        list_folder_classes(png_root, classes, visible_only=True).items()
    ):
        for item in seeded_sample(items, per_class, seed, f"base-new/{classname}"):
            planned.append(PlannedImage(
                DOMAIN, classname, names.claim(DOMAIN, classname, f"openclipart-{item.path.stem}"),
                "openclipart-png", item.path.relative_to(png_root).as_posix(), "original",
                render.file_renderer(item.path, size, "original"),
            ))  # fmt: skip
    return planned


def _grey(package, arrays, classnames, names, size, per_class, seed) -> list[PlannedImage]:
    images, labels = arrays
    planned = []
    for label, indices in pick_per_class(labels, per_class, seed).items():
        classname = classnames[label]
        for index in indices:
            planned.append(PlannedImage(
                DOMAIN, classname, names.claim(DOMAIN, classname, f"{package}-{index:05d}"),
                package, f"index {index}", "original",
                render.grey_renderer(images[index], size, "original"),
            ))  # fmt: skip
    return planned


def _split_class(items: list[PlannedImage], seed: int) -> dict[str, list[PlannedImage]]:
    shuffled = sorted(items, key=lambda item: item.relpath)
    random.Random(f"{seed}:split/{shuffled[0].classname}").shuffle(shuffled)
    n_test = len(shuffled) // 2
    n_val = max(1, len(shuffled) // 10)
    return {
        "test": shuffled[:n_test],
        "val": shuffled[n_test : n_test + n_val],
        "train": shuffled[n_test + n_val :],
    }


def write_split_file(folder: Path, written: list[PlannedImage], seed: int) -> dict[str, str]:
    """Write the CoOp-format split of the written images into ``folder``."""
    by_class: dict[str, list[PlannedImage]] = defaultdict(list)
    for item in written:
        by_class[item.classname].append(item)
    label_of = {name: i for i, name in enumerate(sorted(by_class))}
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for classname in sorted(by_class):
        for part, items in _split_class(by_class[classname], seed).items():
            split[part] += [[i.relpath, label_of[classname], classname] for i in items]
    for entries in split.values():
        entries.sort(key=lambda entry: (entry[1], entry[0]))
    (folder / SPLIT_FILE).write_text(json.dumps(split, indent=0) + "\n")
    return {SPLIT_FILE: f"CoOp split: {', '.join(f'{k} {len(v)}' for k, v in split.items())}"}


def plan(
    sources: SourcePaths,
    *,
    image_size: int = 160,
    clipart_per_class: int = 80,
    grey_per_class: int = 60,
    seed: int = 0,
    classes: dict[str, tuple[str, ...]] | None = None,
) -> BuildPlan:
    """Plan the benchmark; the per-class counts cap each source's images per class."""
    names = NameRegistry()
    fashion = read_fashion_mnist(sources.require("fashion_mnist"), "t10k")
    animals = read_animal_mnist(sources.require("animal_mnist"))
    images = (
        _clipart(sources, names, image_size, clipart_per_class, seed, classes or FOLDER_CLASSES)
        + _grey("dataset-fashion-mnist", fashion, FASHION_CLASSES, names, image_size,
                grey_per_class, seed)
        + _grey("animal-mnist", animals, ANIMAL_CLASSES, names, image_size, grey_per_class, seed)
    )  # fmt: skip
    recipe = {
        "benchmark": NAME,
        "builder_version": 3,
        "image_size": image_size,
        "clipart_per_class": clipart_per_class,
        "grey_per_class": grey_per_class,
        "seed": seed,
        "classes": {name: list(f) for name, f in (classes or FOLDER_CLASSES).items()},
        "source_versions": {p: sources.versions.get(p, "unknown") for p in PACKAGES},
    }
    return BuildPlan(
        images,
        DOMAINS,
        recipe,
        source_records(sources, PACKAGES),
        extra_files=lambda folder, written: write_split_file(folder, written, seed),
    )
