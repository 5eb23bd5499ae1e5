"""``clipood train``: fine-tune on the source domains of a DomainBed folder and test on
the held-out target domain."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clipood.cli.config import add_config_option, resolved_options
from clipood.engine.config import AVERAGINGS, LOSSES, TrainConfig
from clipood.engine.precision import PRECISIONS
from clipood.experiments.methods import METHODS, methods_help
from clipood.experiments.protocol_run import DEFAULT_MODEL

logger = logging.getLogger(__name__)

NAME = "train"

# TrainConfig fields as flags: (type, help). A flag left out takes the value from the
# method and the per-model defaults registry.
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "loss": (str, f"training loss, one of {', '.join(LOSSES)} (default: from --method)"),
    "averaging": (
        str,
        f"weight averaging, one of {', '.join(AVERAGINGS)} (default: from --method)",
    ),
    "margin": (float, "margin weight lambda of margin metric softmax, in cosine units"),
    "beta": (float, "shape parameter of the Beta moving average (1 = uniform average)"),
    "ema_decay": (float, "per-step decay of the exponential moving average (default 0.999)"),
    "lr": (float, "peak AdamW learning rate"),
    "weight_decay": (float, "AdamW weight decay on weight matrices (biases and norms get 0)"),
    "warmup_steps": (int, "linear warmup length, in optimiser steps"),
    "steps": (int, "number of optimiser steps"),
    "batch_size": (int, "images per source domain per step, summed over all processes"),
    "precision": (str, f"autocast precision, one of {', '.join(PRECISIONS)} (default fp32)"),
    "eval_every": (int, "steps between validation evaluations; 0 = at the end only"),
    "checkpoint_every": (int, "steps between resumable checkpoints; 0 = at the end only"),
    "num_workers": (int, "data loading worker processes (default 0: load in the main one)"),
    "average_device": (str, "device of the weight average, e.g. cpu (default: the model's)"),
    "log_every": (int, "steps between training-loss records (default 10)"),
    "grad_clip_norm": (float, "clip the gradient norm to this value; 0 = no clipping"),
    "eval_batch_size": (int, "images per evaluation batch (default 64)"),
}
CHOICES = {"loss": LOSSES, "averaging": AVERAGINGS, "precision": PRECISIONS}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME,
        help="fine-tune on source domains and test on a held-out target domain",
        description=__doc__,
    )
    add_config_option(parser)
    parser.add_argument("--data", type=Path, help="dataset folder laid out as DOMAIN/CLASS/IMAGE")
    parser.add_argument("--target", help="target domain folder name, held out of training")
    parser.add_argument("--method", default="clipood", choices=list(METHODS), help=methods_help())
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="offline[:quick], open_clip:NAME[:PRETRAINED] or hf:ID_OR_FOLDER "
        f"(default {DEFAULT_MODEL})",
    )
    parser.add_argument("--output", type=Path, help="run folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, batches and init")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="fraction of each source domain held out for validation (default 0.2)",
    )
    parser.add_argument(
        "--templates",
        nargs="+",
        help='prompt templates with {} for the class name (default "a photo of a {}.")',
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted run in --output (default); --no-resume starts over",
    )
    for field, (kind, text) in TRAIN_FLAGS.items():
        parser.add_argument(
            "--" + field.replace("_", "-"), type=kind, choices=CHOICES.get(field), help=text
        )
    return parser


def require(args: argparse.Namespace, *names: str) -> None:
    missing = ["--" + n.replace("_", "-") for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"missing required option(s) {', '.join(missing)}")


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Training settings: per-model defaults, then the method, then the given flags."""
    from clipood.experiments.protocol_run import train_config_for
    from clipood.models.loading import parse_model_spec

    overrides = {f: getattr(args, f) for f in TRAIN_FLAGS if getattr(args, f) is not None}
    if args.templates:
        overrides["templates"] = tuple(args.templates)
    spec = parse_model_spec(args.model)
    return train_config_for(
        spec, "domain_shift", Path(args.data).name, args.method, args.seed, overrides, args.device
    )


def check_before_training(args: argparse.Namespace, config: TrainConfig) -> None:
    """Reject what would otherwise fail after the run folder is written: a batch larger
    than a source domain's training split, or settings that differ from a checkpoint
    this run would resume. Lists the dataset's files but loads no model."""
    from clipood.data.domainbed import check_target
    from clipood.engine.distributed import context_from_env
    from clipood.engine.sampling import check_batch_size
    from clipood.engine.train import check_resumable
    from clipood.experiments.domain_shift import source_splits
    from clipood.experiments.in_the_wild import load_multi_domain
    from clipood.experiments.protocol_run import method_settings

    data = load_multi_domain(args.data)
    check_target(data, args.target)
    groups, _ = source_splits(data, args.target, args.holdout_fraction, args.seed)
    if method_settings(args.method).loss is None:
        return  # zero-shot: nothing is trained
    check_batch_size(config.batch_size, groups, context_from_env().world_size)
    if args.resume:
        check_resumable(args.output, config)


def run(args: argparse.Namespace) -> int:
    from clipood.experiments.domain_shift import run_domain_shift

    require(args, "data", "target", "output")
    config = resolve_train_config(args)
    check_before_training(args, config)
    record = resolved_options(args)
    record.update({k: v for k, v in config.to_dict().items() if k in record or k == "templates"})
    summary = run_domain_shift(
        args.model,
        args.data,
        args.target,
        args.method,
        args.seed,
        args.output,
        overrides=config.to_dict(),
        device=args.device,
        holdout_fraction=args.holdout_fraction,
        config_record=record,
        resume=args.resume,
    )
    if summary:
        print_summary(summary, args.output)
    from clipood.engine.distributed import shutdown

    shutdown()
    return 0


def print_summary(summary: dict, output: Path) -> None:
    print(f"{summary['method']} on {summary['target']} (seed {summary['seed']}):")
    for name, numbers in summary["by_weights"].items():
        print(
            f"  test accuracy, {name} weights: {numbers['accuracy']:.4f} ({numbers['total']} images)"
        )
    for name, numbers in summary.get("validation", {}).items():
        print(f"  validation accuracy, {name} weights: {numbers['accuracy']:.4f}")
    print(f"run folder: {output}")
