"""``clipood export``: write a trained run's model in its backend's native format.

OpenCLIP runs become a folder with ``open_clip_model.safetensors`` and
``open_clip_config.json`` (``open_clip.create_model("local-dir:FOLDER")``); Hugging Face
runs become a ``save_pretrained`` folder (``transformers.AutoModel.from_pretrained``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipood.cli.config import add_config_option, add_weights_option

NAME = "export"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        NAME,
        help="export a trained run's model in OpenCLIP or Hugging Face format",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--run", type=Path, required=True, help="training run folder")
    add_weights_option(parser)
    parser.add_argument("--output", type=Path, required=True, help="folder to write")
    add_config_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipood.engine.checkpoint import load_run_model, resolve_weights
    from clipood.fileio import apply_default_permissions

    if args.output.exists() and not args.output.is_dir():
        raise FileExistsError(f"--output {args.output} is an existing file; pass a folder path")
    model = load_run_model(args.run, weights=args.weights, device="cpu")
    written = model.export(model.image_encoder.state_dict(), args.output)
    apply_default_permissions(Path(written))
    weights = resolve_weights(args.run, args.weights)
    print(f"exported {model.spec} with the run's {weights} weights to {written}")
    return 0
