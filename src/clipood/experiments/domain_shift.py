"""Leave-one-domain-out domain shift on a DomainBed-layout dataset.

The target domain is held out, and every other domain is a source. Each source is split
80/20 with ``split_in_out(seed)``. The "in" parts are the training groups (one per
source, so every batch is balanced over sources) and the "out" parts form the
validation set. Test accuracy is measured on all target images. Validation accuracy is
reported under ``validation`` and never as a test number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from clipood.data.domainbed import MultiDomainDataset, check_target
from clipood.data.samples import ImageSample, check_images
from clipood.data.splits import split_in_out
from clipood.engine.checkpoint import save_state_atomic
from clipood.engine.distributed import context_from_env
from clipood.engine.evaluate import evaluate
from clipood.engine.metrics import MetricsLog
from clipood.engine.run_folder import RunFolder, read_json, write_yaml_atomic
from clipood.engine.sampling import check_batch_size
from clipood.engine.train import fit
from clipood.experiments.in_the_wild import load_multi_domain
from clipood.experiments.protocol_run import (
    ProtocolRun,
    prepare_run,
    trained_states,
    write_summary,
)
from clipood.models.base import ImageTextModel, ModelSpec

logger = logging.getLogger(__name__)

PROTOCOL = "domain_shift"
TEMPLATES = ("a photo of a {}.",)


def source_splits(
    data: MultiDomainDataset, target: str, holdout_fraction: float, seed: int
) -> tuple[list[list[ImageSample]], list[ImageSample]]:
    """Return one training group per source domain and the pooled validation samples."""
    groups, validation = [], []
    for domain, samples in data.domains.items():
        if domain == target:
            continue
        inside, outside = split_in_out(samples, holdout_fraction, seed)
        if not inside:
            raise ValueError(f"source domain {domain!r} of {data.root} has no training images")
        groups.append(inside)
        validation.extend(outside)
    if not groups:
        raise ValueError(
            f"{data.root} has no source domain besides the target {target!r}; domain shift "
            f"needs at least two domains"
        )
    return groups, validation


def run_domain_shift(
    model: str | ModelSpec | ImageTextModel,
    dataset: str | Path | MultiDomainDataset,
    target: str,
    method: str = "clipood",
    seed: int = 0,
    run_dir: Path | str = "runs/domain_shift",
    *,
    data_root: Path | str | None = None,
    overrides: Mapping[str, object] | None = None,
    device: str = "cpu",
    holdout_fraction: float = 0.2,
    eval_zeroshot: bool = True,
    dataset_name: str | None = None,
    config_record: Mapping[str, object] | None = None,
    resume: bool = True,
) -> dict:
    """Train on the sources, test on ``target``, write ``run_dir`` and return the summary.

    Defaults come from ``defaults_for(spec, "domain_shift", dataset_name)`` and the
    method; ``overrides`` replaces any ``TrainConfig`` field. ``config_record`` is
    written as ``config.yaml`` (default: this call's arguments and the training
    settings). A passed-in ``ImageTextModel`` is trained in place. A run folder that
    already contains ``summary.json`` is returned as is when ``resume`` is set. Under
    ``torchrun`` every rank trains and rank 0 alone evaluates and writes; other ranks
    return an empty dict.
    """
    folder = RunFolder(Path(run_dir))
    if resume and folder.summary.is_file():
        logger.info("%s is finished; returning its summary", folder.root)
        return read_json(folder.summary)
    data = load_multi_domain(dataset, data_root)
    check_target(data, target)
    name = dataset_name or data.root.name
    groups, validation = source_splits(data, target, holdout_fraction, seed)
    check_images([sample for samples in data.domains.values() for sample in samples])
    run = prepare_run(model, PROTOCOL, name, method, seed, run_dir, overrides, device, TEMPLATES)
    context = context_from_env()
    if run.settings.loss is not None:
        check_batch_size(run.config.batch_size, groups, context.world_size)
    is_main = context.is_main
    if is_main:
        record = dict(config_record) if config_record else default_record(run, data, target)
        write_yaml_atomic(folder.config, record)
    logger.info(
        "%s -> %s (%s, seed %d): training images per source %s, %d validation, %d test",
        name, target, method, seed, [len(g) for g in groups], len(validation),
        len(data.domains[target]),
    )  # fmt: skip

    pretrained = {k: v.detach().clone() for k, v in run.model.image_encoder.state_dict().items()}
    states: dict[str, dict] = {}
    if eval_zeroshot or run.settings.loss is None:
        states["zeroshot"] = pretrained
    steps, history = 0, []
    if run.settings.loss is not None:
        result = fit(run.model, groups, data.classnames, run.config, run_dir, validation, resume)
        steps, history = result.steps, result.history
        states.update(trained_states(run, pretrained, result))
    if not is_main:
        return {}

    known = validation_from_history(history)
    test, held_out = measure_states(run, states, data, target, validation, known)
    log_test_records(folder, steps, test)
    if "wise" in states:
        save_state_atomic(states["wise"], folder.weights("averaged"))
    run.model.image_encoder.load_state_dict(states.get("final", pretrained))
    summary = {
        **run.describe(),
        "dataset_root": str(data.location),
        "target": target,
        "sources": [d for d in data.domains if d != target],
        "counts": {
            "train": [len(g) for g in groups],
            "validation": len(validation),
            "test": len(data.domains[target]),
        },
        "metrics": test[run.settings.reported],
        "reported_weights": run.settings.reported,
        "by_weights": test,
        "validation": held_out,
        "steps": steps,
        "history": "metrics.jsonl" if steps else None,
    }
    write_summary(folder.root, summary)
    return summary


def measure_states(
    run: ProtocolRun,
    states: dict[str, dict],
    data: MultiDomainDataset,
    target: str,
    validation: list[ImageSample],
    known_validation: dict[str, dict],
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Test and validation accuracy of every weight set, keyed by its name; validation
    numbers already in ``known_validation`` are not computed again."""
    test, held_out = {}, dict(known_validation)
    for name, state in states.items():
        run.model.image_encoder.load_state_dict(state)
        options = {**run.eval_options, "templates": run.config.templates}
        result = evaluate(run.model, data.domains[target], data.classnames, **options)
        test[name] = result.to_dict()
        if validation and name not in held_out:
            held_out[name] = evaluate(run.model, validation, data.classnames, **options).to_dict()
        logger.info("%s weights: test accuracy %.4f on %s", name, result.accuracy, target)
    return test, held_out


def validation_from_history(history: list[dict]) -> dict[str, dict]:
    """Validation accuracy of the final and averaged weights that ``fit`` logged at its
    last step (the live weights at the last step are the final weights)."""
    records = [r for r in history if r.get("split") == "val"]
    if not records:
        return {}
    last = records[-1]
    known = {"final": {"accuracy": last["accuracy"], "total": last["accuracy_total"]}}
    if "averaged_accuracy" in last:
        known["averaged"] = {
            "accuracy": last["averaged_accuracy"],
            "total": last["averaged_accuracy_total"],
        }
    return known


def log_test_records(folder: RunFolder, steps: int, test: dict[str, dict]) -> None:
    metrics = MetricsLog(folder.metrics, None, start_step=steps)
    for name, numbers in test.items():
        metrics.log({"step": steps, "split": "test", "weights": name, **numbers})


def default_record(run: ProtocolRun, data: MultiDomainDataset, target: str) -> dict:
    return {
        **run.describe(),
        "data": str(data.location),
        "target": target,
        "train": run.config.to_dict(),
    }
