"""``clipood predict``: classify a folder of images and write the top-k classes as CSV.

CSV columns: ``path``, then ``label_1, score_1, ..., label_K, score_K`` (softmax
probabilities, best first), then ``error``. An image that cannot be decoded is skipped
with a warning. Its row has empty labels and the reason in ``error``. The command fails
only when no image at all could be read.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

from clipood.cli.config import add_config_option, add_weights_option
from clipood.inference import (
    DEFAULT_TOPK,
    ENSEMBLE_TEMPLATES,
    Classifier,
    FilePrediction,
    check_classnames,
    check_templates,
    check_topk,
    find_images,
)

logger = logging.getLogger(__name__)

NAME = "predict"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME,
        help="classify images with a trained run or a pretrained model",
        description=__doc__.split("\n\n")[0],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training run folder to load the model from")
    source.add_argument(
        "--model",
        help="pretrained model: offline, open_clip:NAME[:PRETRAINED] or hf:ID_OR_FOLDER",
    )
    add_weights_option(parser)
    parser.add_argument(
        "--images", type=Path, required=True, help="image file, or folder searched recursively"
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog"')
    classes.add_argument("--classes-file", type=Path, help="text file with one class name per line")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument(
        "--template",
        action="append",
        help='prompt template with {} for the class name (repeatable; default "a photo of a '
        "{}.\" or the run's own templates)",
    )
    prompts.add_argument(
        "--templates",
        choices=("ensemble",),
        help=f"use a built-in set of {len(ENSEMBLE_TEMPLATES)} generic templates, averaged",
    )
    parser.add_argument(
        "--topk",
        type=int,
        default=None,
        help=f"classes per image (default: {DEFAULT_TOPK}, or the number of classes if fewer)",
    )
    parser.add_argument("--output", type=Path, help="CSV file to write (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    add_config_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    # Check the cheap inputs before loading a model, which can take minutes.
    classnames, templates = checked_prompts(args)
    paths = find_images(args.images)
    if args.run is not None:
        classifier = Classifier.from_run(args.run, args.weights, args.device, args.batch_size)
        classnames = classnames or classifier.classnames
    else:
        classifier = Classifier.from_model(args.model, args.device, args.batch_size)
    if not classnames:
        raise ValueError(f"run {args.run} lists no class names; pass --classes or --classes-file")
    topk = args.topk if args.topk is not None else min(DEFAULT_TOPK, len(classnames))
    predictions = classifier.classify_files(paths, classnames, templates, topk)
    failed = sum(prediction.ranking is None for prediction in predictions)
    if failed == len(predictions):
        raise ValueError(f"none of the {failed} images under {args.images} could be read")
    write_output(predictions_csv(predictions, topk), args.output)
    if args.output is not None:
        print(
            f"wrote {len(predictions)} rows to {args.output}; unreadable images: {failed}",
            file=sys.stderr,
        )
    return 0


def checked_prompts(args: argparse.Namespace) -> tuple[list[str] | None, tuple[str, ...] | None]:
    """Return the class names and templates given on the command line (None where the
    model or run supplies them), after checking them and --topk."""
    classnames = read_classnames(args)
    if classnames is None and args.run is None:
        raise ValueError("--model needs class names: pass --classes or --classes-file")
    if classnames is not None:
        classnames = check_classnames(classnames)
        if args.topk is not None:
            check_topk(args.topk, len(classnames))
    templates = ENSEMBLE_TEMPLATES if args.templates == "ensemble" else args.template
    return classnames, None if templates is None else check_templates(templates)


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")


def read_classnames(args: argparse.Namespace) -> list[str] | None:
    """Return the class names from --classes or --classes-file, or None if neither."""
    if args.classes is not None:
        return args.classes.split(",")
    if args.classes_file is not None:
        if not args.classes_file.is_file():
            raise FileNotFoundError(f"--classes-file {args.classes_file} not found")
        lines = args.classes_file.read_text(encoding="utf-8").splitlines()
        # Blank lines (a trailing newline, spacing) are not class names.
        return [line for line in lines if line.strip()]
    return None


def predictions_csv(predictions: list[FilePrediction], topk: int) -> str:
    header = ["path"]
    for rank in range(1, topk + 1):
        header += [f"label_{rank}", f"score_{rank}"]
    header.append("error")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for prediction in predictions:
        row = [str(prediction.path)]
        if prediction.ranking is None:
            row += [""] * (2 * topk) + [prediction.error or ""]
        else:
            for label, score in prediction.ranking:
                row += [label, f"{score:.6f}"]
            row.append("")
        writer.writerow(row)
    return buffer.getvalue()
