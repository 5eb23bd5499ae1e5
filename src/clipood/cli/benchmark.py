"""``clipood benchmark``: build the offline benchmarks from locally available images."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "benchmark"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help="build an offline benchmark dataset")
    commands = parser.add_subparsers(dest="benchmark_command", required=True, metavar="ACTION")
    build = commands.add_parser("build", help="write NAME as ROOT/NAME/DOMAIN/CLASS/IMAGE.png")
    build.add_argument("name", help="benchmark name (see 'clipood benchmark list')")
    build.add_argument("--root", type=Path, required=True, help="folder to write the benchmark in")
    build.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    commands.add_parser("list", help="list the benchmarks")
    return parser


def run(args: argparse.Namespace) -> int:
    from clipood.data.benchmarks import BENCHMARKS, build_benchmark

    if args.benchmark_command == "list":
        for name, builder in BENCHMARKS.items():
            print(f"{name:20s} {builder.summary}")
        return 0
    folder = build_benchmark(args.name, args.root, force=args.force)
    print(f"benchmark {args.name} ready in {folder}")
    return 0
