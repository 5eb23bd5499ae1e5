"""``clipood eval``: accuracy of a trained run or of a pretrained model (zero-shot) on the
domains of a DomainBed folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from clipood.cli.config import add_config_option, add_weights_option
from clipood.engine.checkpoint import resolve_weights
from clipood.engine.precision import PRECISIONS
from clipood.engine.run_folder import RunFolder, write_json_atomic

NAME = "eval"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME, help="evaluate a trained run or a zero-shot model", description=__doc__
    )
    add_config_option(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training run folder to evaluate")
    source.add_argument("--model", help="pretrained model to evaluate zero-shot, e.g. offline")
    add_weights_option(parser)
    parser.add_argument(
        "--data", type=Path, help="dataset folder DOMAIN/CLASS/IMAGE (default: the run's)"
    )
    parser.add_argument(
        "--target", nargs="+", help="domains to evaluate (default: the run's target, else all)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--num-workers", type=int, default=0, help="data loading processes")
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="autocast precision"
    )
    parser.add_argument("--output", type=Path, help="also write the results to this JSON file")
    return parser


def run_settings(run_dir: Path) -> dict:
    """Read the ``data`` and ``target`` a run was trained with from its config.yaml."""
    path = RunFolder(run_dir).config
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_for_eval(args: argparse.Namespace):
    """Return the model, the class names it was trained on (or None), data and targets."""
    from clipood.engine.checkpoint import load_run_model, read_model_description
    from clipood.models.loading import load_model

    if args.model is not None:
        if args.data is None:
            raise ValueError("--model needs --data, the dataset folder to evaluate on")
        return load_model(args.model, device=args.device), None, args.data, args.target
    description = read_model_description(args.run)
    settings = run_settings(args.run)
    data = args.data or settings.get("data")
    if data is None:
        raise ValueError(f"{args.run} does not record its dataset; pass --data")
    targets = args.target or ([settings["target"]] if settings.get("target") else None)
    model = load_run_model(args.run, args.weights, args.device)
    print(f"evaluating {args.run} with its {resolve_weights(args.run, args.weights)} weights")
    return model, description["classnames"], Path(data), targets


def run(args: argparse.Namespace) -> int:
    from clipood.data.domainbed import check_target
    from clipood.engine.evaluate import evaluate
    from clipood.experiments.in_the_wild import load_multi_domain

    model, trained_classes, data_root, targets = load_for_eval(args)
    dataset = load_multi_domain(data_root)
    if trained_classes is not None and trained_classes != dataset.classnames:
        raise ValueError(
            f"the classes of {data_root} {dataset.classnames} differ from the run's "
            f"{trained_classes}"
        )
    targets = [check_target(dataset, t) for t in targets] if targets else list(dataset.domains)
    results = {}
    for target in targets:
        result = evaluate(
            model,
            dataset.domains[target],
            dataset.classnames,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.num_workers,
            precision=args.precision,
        )
        results[target] = result.to_dict()
        print(f"{target}: accuracy {result.accuracy:.4f} ({result.correct}/{result.total})")
    if args.output is not None:
        source = str(args.run) if args.run else args.model
        weights = resolve_weights(args.run, args.weights) if args.run else "zeroshot"
        write_json_atomic(args.output, {"source": source, "weights": weights, "results": results})
    return 0
