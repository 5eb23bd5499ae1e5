"""The in-the-wild protocol: domain shift and open classes at once.

On a multi-domain dataset the first half of the class indices (rounded up) are base
classes. The model trains on the source domains' "in" splits restricted to base
classes, one training group per source domain, with a softmax over the base classes.
It is tested on the whole target domain, every image classified among ALL classes,
and reports accuracy on the base-class images, on the new-class images, on all
images (``total``), and ``H`` of base and new. Unlike the open-class protocol, a new
class image can be mistaken for a base class and the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from clipood.data.domainbed import MultiDomainDataset, check_target, load_domainbed
from clipood.data.manifest import load_manifest
from clipood.data.samples import ImageSample, check_images
from clipood.data.splits import base_new_split, filter_classes, split_in_out
from clipood.data.templates import templates_for
from clipood.engine.evaluate import evaluate
from clipood.experiments.protocol_run import (
    cache_dir,
    prepare_run,
    train_and_collect,
    write_summary,
)
from clipood.experiments.tables import harmonic_mean
from clipood.models.base import ImageTextModel, ModelSpec

log = logging.getLogger(__name__)

PROTOCOL = "in_the_wild"
BENCHMARK_PREFIX = "offline-"


def load_multi_domain(
    source: str | Path | MultiDomainDataset, data_root: Path | str | None = None
) -> MultiDomainDataset:
    """Resolve a DomainBed folder, a CSV manifest with a domain column, or a benchmark name.

    A relative path that does not exist is looked up under ``data_root``.
    """
    if isinstance(source, MultiDomainDataset):
        return source
    text = str(source)
    if text.startswith(BENCHMARK_PREFIX) and not Path(text).exists():
        from clipood.data.benchmarks import build_benchmark

        root = Path(data_root).expanduser() if data_root else cache_dir() / "benchmarks"
        return load_domainbed(build_benchmark(text, root))
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and data_root is not None:
        path = Path(data_root).expanduser() / path
    if path.suffix.lower() == ".csv":
        return load_manifest(path).to_multi_domain()
    return load_domainbed(path)


def per_class_accuracy(per_class: Mapping[int, tuple[int, int]], classes: Sequence[int]) -> dict:
    """Pool correct and total counts over ``classes``; raise if they have no images."""
    correct = sum(per_class.get(c, (0, 0))[0] for c in classes)
    total = sum(per_class.get(c, (0, 0))[1] for c in classes)
    if total == 0:
        raise ValueError(f"the target domain has no images of classes {list(classes)[:10]}")
    return {"accuracy": correct / total, "images": total}


def evaluate_wild(
    model: ImageTextModel,
    target: Sequence[ImageSample],
    classnames: Sequence[str],
    base: Sequence[int],
    new: Sequence[int],
    templates: Sequence[str],
    **options,
) -> dict[str, float]:
    """Classify the target among all classes; split the counts into base and new."""
    result = evaluate(model, target, classnames, templates, **options)
    base_part = per_class_accuracy(result.per_class, base)
    new_part = per_class_accuracy(result.per_class, new)
    return {
        "base": base_part["accuracy"],
        "new": new_part["accuracy"],
        "total": result.accuracy,
        "H": harmonic_mean(base_part["accuracy"], new_part["accuracy"]),
        "base_images": base_part["images"],
        "new_images": new_part["images"],
    }


def run_in_the_wild(
    model: str | ModelSpec | ImageTextModel,
    dataset: str | Path | MultiDomainDataset,
    target: str,
    method: str = "clipood",
    seed: int = 0,
    run_dir: Path | str = "runs/in_the_wild",
    *,
    data_root: Path | str | None = None,
    overrides: Mapping[str, object] | None = None,
    device: str = "cpu",
    holdout_fraction: float = 0.2,
    eval_zeroshot: bool = True,
    dataset_name: str | None = None,
) -> dict:
    """Run one in-the-wild experiment and write ``run_dir/summary.json``; return the summary.

    Defaults come from ``defaults_for(spec, "in_the_wild", dataset_name)``; ``overrides``
    replaces training settings. The sources' "out" splits (``holdout_fraction``) are
    left out of training, as in the domain-shift protocol.
    """
    data = load_multi_domain(dataset, data_root)
    check_target(data, target)
    name = dataset_name or data.root.name
    base, new = base_new_split(len(data.classnames))
    groups, held_out = _source_groups(data, target, base, holdout_fraction, seed)
    templates = templates_for(name)
    check_images([sample for samples in data.domains.values() for sample in samples])
    run = prepare_run(model, PROTOCOL, name, method, seed, run_dir, overrides, device, templates)
    test = data.domains[target]
    log.info(
        "%s -> %s: %d base / %d new classes, training images per source %s, %d test images",
        name, target, len(base), len(new), [len(g) for g in groups], len(test),
    )  # fmt: skip

    def measure(trained: ImageTextModel) -> dict[str, float]:
        return evaluate_wild(trained, test, data.classnames, base, new, templates,
                             **run.eval_options)  # fmt: skip

    base_names = [data.classnames[i] for i in base]
    results = train_and_collect(run, groups, base_names, measure, eval_zeroshot=eval_zeroshot)
    summary = {
        **run.describe(),
        "target": target,
        "sources": [d for d in data.domains if d != target],
        "classes": {"base": base_names, "new": [data.classnames[i] for i in new]},
        "counts": {"train": [len(g) for g in groups], "held_out": held_out, "test": len(test)},
        **results,
    }
    write_summary(run.run_dir, summary)
    return summary


def _source_groups(
    data: MultiDomainDataset, target: str, base: Sequence[int], holdout: float, seed: int
) -> tuple[list[list[ImageSample]], int]:
    """Base-class samples of each source's "in" split; also the held-out count."""
    groups, held_out = [], 0
    for domain, samples in data.domains.items():
        if domain == target:
            continue
        inside, outside = split_in_out(samples, holdout, seed)
        # Base classes are labels 0..len(base)-1, so labels need no remapping.
        group = filter_classes(inside, base, relabel=False)
        if not group:
            raise ValueError(f"source domain {domain!r} has no base-class images to train on")
        groups.append(group)
        held_out += len(outside)
    if not groups:
        raise ValueError(f"{data.root} has no source domain besides the target {target!r}")
    return groups, held_out
