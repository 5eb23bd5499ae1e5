"""``clipood model``: build the offline default model and list the model names."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "model"

MODEL_FORMATS = (
    ("offline", "EfficientNet-Lite0 image tower + MiniLM text tower, built locally"),
    ("offline:quick", "the same towers with a seconds-long projection fit, for smoke tests"),
    ("open_clip:NAME[:PRETRAINED]", "an OpenCLIP model; PRETRAINED is a tag or a local file"),
    ("hf:ID_OR_FOLDER", "a Hugging Face transformers CLIP or SigLIP checkpoint"),
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help="build the offline model, list model names")
    commands = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = commands.add_parser("build", help="fit and cache the offline default model")
    build.add_argument(
        "--cache-dir", type=Path, help="cache folder (default $CLIPOOD_CACHE or ~/.cache/clipood)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    build.add_argument("--quick", action="store_true", help="seconds-long build for smoke tests")
    commands.add_parser("list", help="list the model name formats and the offline builds")
    return parser


def run(args: argparse.Namespace) -> int:
    from clipood.models import offline

    if args.model_command == "build":
        folder = offline.build_offline_model(args.cache_dir, force=args.force, quick=args.quick)
        print(f"offline model ready in {folder}")
        return 0
    for name, text in MODEL_FORMATS:
        print(f"{name:30s} {text}")
    for quick in (False, True):
        folder = offline.build_folder(None, quick)
        state = "built" if offline.is_built(folder) else "not built (clipood model build)"
        print(f"offline {'quick' if quick else 'default'} build: {folder}: {state}")
    return 0
