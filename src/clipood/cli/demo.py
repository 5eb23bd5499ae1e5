"""``clipood demo``: zero-shot vs fine-tuning vs CLIPood on the offline-domains benchmark,
entirely offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipood.cli.config import add_config_option

NAME = "demo"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from clipood.experiments.demo import DemoSettings

    defaults = DemoSettings()
    parser = subparsers.add_parser(
        NAME, help="run the offline demo (builds the offline model and benchmark once)",
        description=__doc__,
    )  # fmt: skip
    add_config_option(parser)
    parser.add_argument(
        "--output", type=Path, default=defaults.output, help="folder for results and runs"
    )
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help="optimiser steps per training run"
    )
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per source domain"
    )
    parser.add_argument(
        "--image-size", type=int, default=defaults.image_size, help="image side, in pixels"
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=defaults.per_class,
        help="benchmark images per class in the generated domains",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every run")
    parser.add_argument("--device", default=defaults.device, help="torch device")
    parser.add_argument("--cache-dir", type=Path, help="cache folder for the model build")
    parser.add_argument("--data-root", type=Path, help="folder for the benchmark images")
    parser.add_argument(
        "--quick-model", action="store_true", help="use the seconds-long offline model build"
    )
    parser.add_argument("--targets", nargs="+", help="target domains (default: all)")
    return parser


def run(args: argparse.Namespace) -> int:
    from clipood.experiments.demo import DemoSettings, format_table, run_demo

    settings = DemoSettings(
        output=args.output,
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        per_class=args.per_class,
        seed=args.seed,
        device=args.device,
        cache_dir=args.cache_dir,
        data_root=args.data_root,
        quick_model=args.quick_model,
        targets=tuple(args.targets) if args.targets else None,
    )
    results = run_demo(settings)
    print(format_table(results))
    print(f"took {results['seconds']:.0f} s; results, plot and runs in {args.output}")
    return 0
