"""The ``clipood`` command: argument parsing, configuration files and logging set-up.

Each subcommand is a module ``clipood.cli.<name>`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Invalid user input (a missing folder, an unknown domain or method,
a bad configuration value) ends with one error message on stderr and exit code 2;
``-v`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import yaml

from clipood import __version__
from clipood.cli.config import apply_config
from clipood.data.samples import ImageDecodeError
from clipood.engine.config import check_device

logger = logging.getLogger("clipood.cli")

COMMAND_MODULES = (
    "train",
    "eval",
    "demo",
    "experiment",
    "predict",
    "export",
    "model",
    "benchmark",
)
# Errors caused by user input; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    ImportError,
    ImageDecodeError,
    FloatingPointError,
)
USAGE_ERROR = 2


def import_command(name: str) -> ModuleType | None:
    """Import ``clipood.cli.<name>``, or return None if that module is not installed."""
    module_name = f"clipood.cli.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        logger.debug("subcommand module %s is not available; skipping it", module_name)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipood",
        description="Fine-tune CLIP-style image-text models with CLIPood and evaluate them "
        "under domain shift and on unseen classes.",
    )
    parser.add_argument("--version", action="version", version=f"clipood {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="show debug messages and tracebacks"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = import_command(name)
        if module is None:
            continue
        command = module.add_parser(subparsers)
        command.set_defaults(_run=module.run)
        # Accept -v after the subcommand too; SUPPRESS keeps the top-level count otherwise.
        command.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="show debug messages and tracebacks",
        )
    return parser


def setup_logging(verbose: int) -> None:
    """Log INFO and up to stderr (DEBUG with -v); ranks other than 0 log warnings only."""
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("RANK", "0") != "0":
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        args = apply_config(parser, args, argv)
        if getattr(args, "device", None) is not None:
            check_device("--device", args.device, available=True)
        return int(args._run(args) or 0)
    except (*USER_ERRORS, yaml.YAMLError) as err:
        if args.verbose:
            logger.exception("clipood %s failed", args.command)
        message = str(err) or type(err).__name__
        print(f"clipood {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("clipood: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
