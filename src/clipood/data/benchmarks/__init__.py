"""Offline benchmarks built from real images that install without network datasets.

``build_benchmark(name, root)`` writes ``root/NAME/DOMAIN/CLASS/IMAGE.png`` plus
``root/NAME/manifest.json`` and returns ``root/NAME``; ``load_domainbed`` reads the result.
See docs/BENCHMARK_DATA.md for the benchmarks' domains, classes and sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipood.data.benchmarks import offline_base_new, offline_domains, offline_wild
from clipood.data.benchmarks.sources import SourcePaths, SourceUnavailableError, locate_sources
from clipood.data.benchmarks.writer import BuildPlan, write_benchmark


@dataclass(frozen=True)
class BenchmarkBuilder:
    """A registered benchmark: the source packages it needs and the function that plans it."""

    packages: tuple[str, ...]
    plan: Callable[..., BuildPlan]
    summary: str


BENCHMARKS: dict[str, BenchmarkBuilder] = {
    offline_domains.NAME: BenchmarkBuilder(
        offline_domains.PACKAGES,
        offline_domains.plan,
        "10 animals in 3 domains (clipart, silhouette, outline): domain shift",
    ),
    offline_base_new.NAME: BenchmarkBuilder(
        offline_base_new.PACKAGES,
        offline_base_new.plan,
        "all nameable classes in one domain with a CoOp split file: base-to-new classes",
    ),
    offline_wild.NAME: BenchmarkBuilder(
        offline_wild.PACKAGES,
        offline_wild.plan,
        "32 clip-art classes in 3 styles (clipart, sketch, silhouette): both shifts",
    ),
}


def default_cache() -> Path:
    """Return the cache folder: ``$CLIPOOD_CACHE`` or ``~/.cache/clipood``."""
    return Path(os.environ.get("CLIPOOD_CACHE", "~/.cache/clipood")).expanduser()


def build_benchmark(
    name: str,
    root: Path | str,
    *,
    force: bool = False,
    sources: SourcePaths | None = None,
    cache: Path | None = None,
    **options,
) -> Path:
    """Build (or reuse) benchmark ``name`` under ``root`` and return its folder.

    ``sources`` overrides where the source images are read from, so tests can point it at
    small generated trees. By default each package is found installed or fetched into
    ``cache/debian``. ``options`` go to the benchmark's plan function (for example
    ``image_size`` or ``per_class``). ``force`` rebuilds even when a matching build exists.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}")
    builder = BENCHMARKS[name]
    if sources is None:
        sources = locate_sources(set(builder.packages), cache or default_cache())
    return write_benchmark(name, Path(root).expanduser(), builder.plan(sources, **options), force)


__all__ = [
    "BENCHMARKS",
    "BenchmarkBuilder",
    "SourcePaths",
    "SourceUnavailableError",
    "build_benchmark",
    "default_cache",
]
