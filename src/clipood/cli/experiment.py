"""``clipood experiment``: run a grid of protocol runs over seeds, and print result tables.

``clipood experiment run --config EXP.yaml`` (or ``--recipe NAME`` for a packaged
recipe, or flags alone) runs every protocol x dataset x target x method x seed not
finished yet. ``clipood experiment table OUT`` writes ``OUT/results.md`` and
``OUT/results.csv`` from ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from clipood.experiments import runner, tables
from clipood.experiments.protocol_run import DEFAULT_MODEL

logger = logging.getLogger(__name__)

NAME = "experiment"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME, help="run multi-seed experiment grids and print result tables",
        description=__doc__.split("\n\n")[0],
    )  # fmt: skip
    commands = parser.add_subparsers(dest="experiment_command", required=True)
    _add_run_parser(commands)
    table = commands.add_parser("table", help="write Markdown and CSV tables of a grid's results")
    table.add_argument(
        "output", type=Path, help="the grid's output folder (contains results.jsonl)"
    )
    return parser


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run every unfinished run of an experiment grid")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="experiment YAML file (keys: see docs)")
    source.add_argument(
        "--recipe", help=f"packaged recipe name, one of: {', '.join(_recipe_names())}"
    )
    run.add_argument("--output", type=Path, help="output folder of the grid")
    run.add_argument(
        "--data-root", type=Path,
        help=f"folder holding the datasets (default: ${runner.DATA_ROOT_ENV})",
    )  # fmt: skip
    run.add_argument(
        "--model",
        help="offline, open_clip:NAME[:PRETRAINED] or hf:ID_OR_FOLDER (default: the file's "
        f"model, else {DEFAULT_MODEL})",
    )
    run.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    run.add_argument("--protocol", choices=runner.PROTOCOLS, help="protocol of a flag-only grid")
    run.add_argument(
        "--dataset", action="append",
        help="dataset name or path (repeatable); replaces the file's grid, needs --protocol",
    )  # fmt: skip
    run.add_argument("--targets", nargs="+", help="target domains (default: every domain)")
    run.add_argument("--methods", nargs="+", help="methods, e.g. zeroshot erm clipood")
    run.add_argument("--seeds", nargs="+", type=int, help="seeds, e.g. 0 1 2 3 4")
    run.add_argument("--shots", type=int, help="training images per base class (open class)")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="training setting for every run, e.g. --set lr=5e-6 --set steps=500 (repeatable)",
    )  # fmt: skip
    run.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE",
        help="model loading option, e.g. --model-option image_size=128 for the offline model "
        "(repeatable)",
    )  # fmt: skip
    run.add_argument(
        "--no-zeroshot-eval",
        action="store_true",
        help="skip measuring the pretrained weights inside each training run",
    )
    run.add_argument(
        "--skip-missing",
        action="store_true",
        help="drop images a split file lists but the disk lacks, with a warning",
    )
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the targets and training settings, list the runs and exit",
    )


def _recipe_names() -> list[str]:
    return sorted(p.stem for p in runner.RECIPE_DIR.glob("*.yaml"))


def run(args: argparse.Namespace) -> int:
    if args.experiment_command == "table":
        markdown, markdown_path, csv_path = tables.write_tables(args.output)
        print(markdown)
        print(f"wrote {markdown_path} and {csv_path}")
        return 0
    config = build_config(args)
    if args.dry_run:
        grid = runner.expand_grid(config)
        runner.check_grid(config, grid)
        print(runner.describe_grid(grid, config.output))
        print(f"{len(grid)} runs")
        return 0
    report = runner.run_experiment(config, fail_fast=args.fail_fast)
    print(
        f"finished {report.finished}, skipped {report.skipped} already finished, "
        f"failed {len(report.failed)}; results in {config.output / 'results.jsonl'}"
    )
    for folder, message in report.failed:
        print(f"FAILED {folder}: {message}")
    return 1 if report.failed else 0


def build_config(args: argparse.Namespace) -> runner.ExperimentConfig:
    """Merge the experiment file (if any) with the flags; flags win."""
    data: dict = {}
    source = "flags"
    path = runner.recipe_path(args.recipe) if args.recipe else args.config
    if path is not None:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        source = str(path)
    flags = {"output": args.output, "data_root": args.data_root, "model": args.model,
             "device": args.device, "methods": args.methods, "seeds": args.seeds}  # fmt: skip
    data.update({k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v})
    if args.set:
        data["overrides"] = {**(data.get("overrides") or {}), **parse_settings(args.set, "--set")}
    if args.model_option:
        options = parse_settings(args.model_option, "--model-option")
        data["model_options"] = {**(data.get("model_options") or {}), **options}
    if args.no_zeroshot_eval:
        data["eval_zeroshot"] = False
    if args.skip_missing:
        data["skip_missing"] = True
    if args.dataset:
        if not args.protocol:
            raise ValueError("--dataset needs --protocol (domain_shift, open_class, in_the_wild)")
        data.pop("experiments", None)
        data.update(protocol=args.protocol, datasets=args.dataset)
    _apply_block_flags(data, args)
    return runner.parse_experiment(data, source=source)


def _apply_block_flags(data: dict, args: argparse.Namespace) -> None:
    blocks = data.get("experiments") or [data]
    for block in blocks:
        if args.targets:
            block["targets"] = args.targets
        if args.shots:
            block["shots"] = args.shots


def parse_settings(items: list[str], flag: str) -> dict:
    """Parse ``KEY=VALUE`` pairs; values are read as YAML scalars (numbers, booleans)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. --set lr=5e-6")
        settings[key.strip().replace("-", "_")] = _scalar(value)
    return settings


def _scalar(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):
        # YAML 1.1 reads "5e-6" (no dot) as a string; a learning rate is meant.
        try:
            return float(value)
        except ValueError:
            return value
    return value
