"""YAML configuration files as defaults for a subcommand's flags.

``--config FILE.yaml`` maps flag names (with dashes or underscores) to values; they
replace the parser's defaults, and flags given on the command line still win. Values
are checked like command-line values: types converted, choices enforced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

PARSER_KEY = "_config_parser"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML file of defaults for this command's flags (keys are flag names); "
        "flags on the command line override it",
    )
    parser.set_defaults(**{PARSER_KEY: parser})


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights``: which of a run's saved image-tower weights to load."""
    parser.add_argument(
        "--weights",
        default="auto",
        choices=("auto", "averaged", "final"),
        help="which weights of --run to load; auto (the default) takes the weights the run "
        "reports: averaged for methods that average, else final",
    )


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"configuration file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"configuration file {path} must map flag names to values")  # noqa: TRY004
    return data


def convert_value(action: argparse.Action, key: str, value: object, path: Path) -> object:
    """Convert a YAML value the way argparse converts a command-line string."""
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        return [convert_value(_single(action), key, item, path) for item in items]
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError(f"{key!r} in {path} must be true or false, got {value!r}")  # noqa: TRY004
        return value
    if action.type is not None and value is not None:
        try:
            value = action.type(value if not isinstance(value, int | float) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"invalid value {value!r} for {key!r} in {path}: {err}") from err
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"invalid value {value!r} for {key!r} in {path}; choose from {choices}")
    return value


def _single(action: argparse.Action) -> argparse.Action:
    single = argparse.Action(action.option_strings, action.dest, type=action.type)
    single.choices = action.choices
    return single


# Keys a run folder's resolved config.yaml records that are not flags of the command.
RECORD_ONLY_KEYS = {"command", "verbose"}


def config_defaults(parser: argparse.ArgumentParser, path: Path) -> dict:
    """Read ``path`` and return validated defaults keyed by the flags' destinations."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "config"}
    defaults = {}
    for key, value in read_config_file(path).items():
        dest = str(key).replace("-", "_")
        if dest in RECORD_ONLY_KEYS:
            continue  # written into a run's config.yaml, so the file can be reused as is
        if dest not in actions:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions if d != "help"))
            raise ValueError(f"unknown key {key!r} in {path}; this command's flags are: {known}")
        defaults[dest] = convert_value(actions[dest], str(key), value, path)
    return defaults


def apply_config(
    main_parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]
) -> argparse.Namespace:
    """Reparse ``argv`` with the YAML file's values as defaults (if ``--config`` was given)."""
    parser = getattr(args, PARSER_KEY, None)
    path = getattr(args, "config", None)
    if parser is None or path is None:
        return args
    parser.set_defaults(**config_defaults(parser, Path(path)))
    return main_parser.parse_args(argv)


def resolved_options(args: argparse.Namespace) -> dict:
    """Return the parsed options as YAML-ready values (paths as strings, no internals)."""
    options = {}
    for key, value in vars(args).items():
        if key.startswith("_") or callable(value):
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list | tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        options[key] = value
    return options
