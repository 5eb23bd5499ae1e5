"""Write a planned benchmark as a DomainBed tree with a manifest, atomically and reusably.

A build renders into a hidden ``.NAME.partial-PID`` folder next to the result and renames
it to ``NAME`` only after ``manifest.json`` is written, so a killed build leaves nothing
that looks complete (and ``load_domainbed`` ignores hidden folders). A later build deletes
stale partial folders. An existing tree is reused when its manifest records the same
recipe and every listed image file exists.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PlannedImage:
    """One output image: where it goes, where it comes from and how to render it."""

    domain: str
    classname: str
    name: str  # file stem, unique within its class folder
    source: str  # package name of the source
    origin: str  # file path, array index or character inside the source
    style: str  # "original" or the name of the derived style
    render: Callable[[], Image.Image] = field(compare=False, repr=False)

    @property
    def relpath(self) -> str:
        return f"{self.domain}/{self.classname}/{self.name}.png"


@dataclass
class BuildPlan:
    """Everything a builder decides before any image is rendered."""

    images: list[PlannedImage]
    domain_descriptions: dict[str, str]
    recipe: dict  # parameters and source versions; equal recipes give equal trees
    sources: list[dict]  # package, version, licence, path
    extra_files: Callable[[Path, list[PlannedImage]], dict[str, str]] | None = None


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_reusable(folder: Path, recipe: dict) -> bool:
    """Return True if ``folder`` contains a finished build of exactly this recipe."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("recipe") != recipe:
        return False
    return all((folder / entry[0]).is_file() for entry in manifest.get("images", []))


def _remove_stale_partials(root: Path, name: str) -> None:
    for stale in root.glob(f".{name}.partial-*"):
        logger.info("removing unfinished build %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _render_all(plan: BuildPlan, folder: Path, name: str) -> tuple[list, list]:
    written, skipped = [], []
    for item in tqdm(plan.images, desc=f"building {name}", unit="image", disable=None):
        try:
            image = item.render()
        except ValueError as err:
            skipped.append({"origin": item.origin, "source": item.source, "reason": str(err)})
            logger.warning("skipped %s: %s", item.origin, err)
            continue
        target = folder / item.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG", optimize=False)
        written.append(item)
    return written, skipped


def _domain_summary(plan: BuildPlan, written: list[PlannedImage]) -> dict:
    counts: dict[str, Counter] = defaultdict(Counter)
    styles: dict[str, Counter] = defaultdict(Counter)
    for item in written:
        counts[item.domain][item.classname] += 1
        styles[item.domain][f"{item.source}:{item.style}"] += 1
    return {
        domain: {
            "description": description,
            "total": sum(counts[domain].values()),
            "per_class": dict(sorted(counts[domain].items())),
            "per_source_and_style": dict(sorted(styles[domain].items())),
        }
        for domain, description in plan.domain_descriptions.items()
    }


def _manifest(name, plan, written, skipped, extra, seconds) -> dict:
    return {
        "name": name,
        "layout": "DOMAIN/CLASS/IMAGE.png (DomainBed)",
        "recipe": plan.recipe,
        "sources": plan.sources,
        "classnames": sorted({item.classname for item in written}),
        "domains": _domain_summary(plan, written),
        "total_images": len(written),
        "skipped": skipped,
        "extra_files": extra,
        "build_seconds": round(seconds, 2),
        "images": [[i.relpath, i.source, i.origin, i.style] for i in written],
    }


def _check_domains(name: str, plan: BuildPlan, written: list[PlannedImage]) -> None:
    filled = {item.domain for item in written}
    empty = [domain for domain in plan.domain_descriptions if domain not in filled]
    if empty:
        raise ValueError(
            f"benchmark {name}: domains {empty} got no images; check the source folders"
        )


def _swap_in(partial: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)


def write_benchmark(name: str, root: Path, plan: BuildPlan, force: bool = False) -> Path:
    """Render ``plan`` into ``root/name`` unless a matching build is there already."""
    final = root / name
    if not force and is_reusable(final, plan.recipe):
        logger.info("reusing benchmark %s at %s", name, final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, name)
    partial = root / f".{name}.partial-{os.getpid()}"
    partial.mkdir()
    start = time.perf_counter()

    try:
        written, skipped = _render_all(plan, partial, name)
        _check_domains(name, plan, written)
        extra = plan.extra_files(partial, written) if plan.extra_files else {}
        seconds = time.perf_counter() - start
        manifest = _manifest(name, plan, written, skipped, extra, seconds)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _swap_in(partial, final)
    except BaseException:
        # A process killed outright cannot get here; its partial folder is removed by the
        # next build of the same name.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("built benchmark %s: %d images in %.1f s", name, len(written),
                manifest["build_seconds"])  # fmt: skip
    return final
