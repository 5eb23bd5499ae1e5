"""The open-class (base-to-new) protocol.

Classes are sorted by label and split in half (base gets the extra class of an odd
count). The model is fine-tuned on ``shots`` training images per base class as one
training group, with a softmax over the base classes only. Base accuracy classifies
the base classes' test images among the base classes; new accuracy classifies the new
classes' test images among the new classes (``evaluate(class_subset=...)``, the same as
CoOp's relabelling of the new classes from 0). ``H = 2 B N / (B + N)``, 0 if both are 0.
Each run reports the zero-shot, final and averaged weights.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from clipood.data.coop import BaseNewSplit, base_to_new, is_coop_dataset, load_coop, read_split_file
from clipood.data.manifest import load_labelled_images
from clipood.data.samples import ImageSample, check_images
from clipood.data.templates import templates_for
from clipood.engine.evaluate import evaluate
from clipood.experiments.protocol_run import (
    ProtocolRun,
    cache_dir,
    prepare_run,
    train_and_collect,
    write_summary,
)
from clipood.experiments.tables import harmonic_mean
from clipood.models.base import ImageTextModel, ModelSpec

log = logging.getLogger(__name__)

PROTOCOL = "open_class"
# Custom data without a split file: the fraction of each class held out for testing.
CUSTOM_TEST_FRACTION = 0.5
# NOTE: the offline benchmark's split file lists paths relative to its own folder.
BENCHMARK_PREFIX = "offline-"


def load_open_class_data(
    source: str | Path,
    *,
    data_root: Path | str | None = None,
    shots: int = 16,
    seed: int = 0,
    skip_missing: bool = False,
) -> tuple[str, BaseNewSplit, tuple[str, ...]]:
    """Resolve ``source`` and split it into base and new classes.

    ``source`` is one of the 11 CoOp dataset names (read under ``data_root``), an
    offline benchmark name, a CoOp-style split JSON file, a CSV manifest or an image
    folder. Data without a split file is split per class with ``seed``: half of each
    class's images (rounded down) for testing, the rest for training.
    Returns the dataset name, the split and the prompt templates.
    """
    text = str(source)
    if is_coop_dataset(text) and not Path(text).exists():
        if data_root is None:
            raise ValueError(f"{text} needs a data root: pass --data-root or set CLIPOOD_DATA")
        splits = load_coop(data_root, text, skip_missing=skip_missing)
        return (
            splits.name,
            _split(splits.classnames, splits.train, splits.test, shots, seed),
            (splits.templates),
        )
    path = _resolve_path(text, data_root)
    if path.suffix.lower() == ".json":
        splits = read_split_file(path, skip_missing=skip_missing)
        return (
            splits.name,
            _split(splits.classnames, splits.train, splits.test, shots, seed),
            (splits.templates),
        )
    data = load_labelled_images(path)
    train, test = split_per_class(data.samples, CUSTOM_TEST_FRACTION, seed)
    name = path.stem if path.is_file() else path.name
    return name, _split(data.classnames, train, test, shots, seed), templates_for(None)


def split_per_class(
    samples: list[ImageSample], test_fraction: float, seed: int
) -> tuple[list[ImageSample], list[ImageSample]]:
    """Hold out ``floor(n * test_fraction)`` random images of each class for testing."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_label[sample.label].append(index)
    held_out: set[int] = set()
    for label, indices in by_label.items():
        shuffled = list(indices)
        random.Random(seed * 1_000_003 + label).shuffle(shuffled)
        held_out.update(shuffled[: int(len(shuffled) * test_fraction)])
    train = [s for i, s in enumerate(samples) if i not in held_out]
    test = [s for i, s in enumerate(samples) if i in held_out]
    return train, test


def _resolve_path(text: str, data_root: Path | str | None) -> Path:
    if text.startswith(BENCHMARK_PREFIX) and not Path(text).exists():
        from clipood.data.benchmarks import build_benchmark

        folder = Path(build_benchmark(text, _benchmark_root(data_root)))
        split_files = sorted(folder.glob("split_zhou_*.json"))
        if not split_files:
            raise ValueError(f"benchmark {text} at {folder} has no split_zhou_*.json file")
        return split_files[0]
    path = Path(text).expanduser()
    if not path.is_absolute() and data_root is not None and not path.exists():
        path = Path(data_root).expanduser() / path
    if not path.exists():
        raise FileNotFoundError(
            f"open-class data {text!r} not found: expected one of the CoOp dataset names, "
            f"a split JSON file, a CSV manifest or an image folder"
        )
    return path


def _benchmark_root(data_root: Path | str | None) -> Path:
    return Path(data_root).expanduser() if data_root else cache_dir() / "benchmarks"


def _split(classnames, train, test, shots, seed) -> BaseNewSplit:
    return base_to_new(classnames, train, test, shots=shots, seed=seed)


def evaluate_base_new(
    model: ImageTextModel,
    split: BaseNewSplit,
    templates: tuple[str, ...],
    *,
    device: str = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
) -> dict[str, float]:
    """Base accuracy among base classes, new accuracy among new classes, and their H."""
    options = {"device": device, "batch_size": batch_size, "num_workers": num_workers}
    base = evaluate(model, split.test_base, split.classnames, templates,
                    class_subset=split.base, **options)  # fmt: skip
    new = evaluate(model, split.test_new, split.classnames, templates,
                   class_subset=split.new, **options)  # fmt: skip
    return {
        "base": base.accuracy,
        "new": new.accuracy,
        "H": harmonic_mean(base.accuracy, new.accuracy),
        "base_images": base.total,
        "new_images": new.total,
    }


def run_open_class(
    model: str | ModelSpec | ImageTextModel,
    source: str | Path,
    method: str = "clipood",
    seed: int = 0,
    shots: int = 16,
    run_dir: Path | str = "runs/open_class",
    *,
    data_root: Path | str | None = None,
    overrides: Mapping[str, object] | None = None,
    device: str = "cpu",
    eval_zeroshot: bool = True,
    skip_missing: bool = False,
) -> dict:
    """Run one open-class experiment and write ``run_dir/summary.json``; return the summary.

    ``overrides`` replaces training settings (``lr``, ``margin``, ``beta``, ``steps``,
    ``batch_size``, ``precision``, ...) of ``defaults_for(spec, "open_class", dataset)``.
    A run folder with an unfinished checkpoint resumes from it.
    """
    name, split, templates = load_open_class_data(
        source, data_root=data_root, shots=shots, seed=seed, skip_missing=skip_missing
    )
    check_images([*split.train, *split.test_base, *split.test_new])
    run = prepare_run(model, PROTOCOL, name, method, seed, run_dir, overrides, device, templates)
    log.info(
        "%s: %d base and %d new classes, %d training images (%d shots), %d/%d test images",
        name, len(split.base), len(split.new), len(split.train), shots,
        len(split.test_base), len(split.test_new),
    )  # fmt: skip

    def measure(trained: ImageTextModel) -> dict[str, float]:
        return evaluate_base_new(trained, split, templates, **run.eval_options)

    results = train_and_collect(
        run, [split.train], split.base_classnames, measure, eval_zeroshot=eval_zeroshot
    )
    summary = _summary(run, name, split, shots, results)
    write_summary(run.run_dir, summary)
    return summary


def _summary(run: ProtocolRun, name: str, split: BaseNewSplit, shots: int, results) -> dict:
    return {
        **run.describe(),
        "shots": shots,
        "classes": {"base": split.base_classnames, "new": split.new_classnames},
        "counts": {
            "train": len(split.train),
            "test_base": len(split.test_base),
            "test_new": len(split.test_new),
        },
        **results,
    }
