"""Small helpers shared by the benchmark plans."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TypeVar

from clipood.data.benchmarks.sources import ATTRIBUTE_OF, LICENCES, SourcePaths

T = TypeVar("T")


class NameRegistry:
    """File stems that stay unique within each class folder."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()

    def claim(self, domain: str, classname: str, stem: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60]
        name, counter = base, 2
        while (domain, classname, name) in self._seen:
            name, counter = f"{base}-{counter}", counter + 1
        self._seen.add((domain, classname, name))
        return name


def seeded_sample(items: Sequence[T], count: int, seed: int, key: str) -> list[T]:
    """Shuffle ``items`` with a seed tied to ``key`` and keep the first ``count``."""
    shuffled = list(items)
    random.Random(f"{seed}:{key}").shuffle(shuffled)
    return shuffled[:count]


def source_records(sources: SourcePaths, packages: Sequence[str]) -> list[dict]:
    """Describe the used source packages for the manifest."""
    return [
        {
            "package": package,
            "version": sources.versions.get(package, "unknown"),
            "licence": LICENCES[package],
            "path": str(getattr(sources, ATTRIBUTE_OF[package])),
        }
        for package in packages
    ]
