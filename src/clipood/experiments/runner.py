"""Run a grid of protocol x dataset x target x method x seed, one folder per run.

Each run writes ``OUT/<protocol>/<dataset>/<target>/<method>/seed<k>/``. A run whose
``summary.json`` exists is skipped and an interrupted one resumes from its checkpoint
through the engine, both only if their saved settings match the grid's. After every
run ``OUT/results.jsonl`` is rewritten atomically from all run folders under ``OUT``:
one record per finished run (from ``summary.json``) or failed run (from
``error.json``), so the file never misses or duplicates a run.

Experiment file (YAML), every key optional except ``output`` and the grid::

    model: open_clip:ViT-B-16:openai   # default: offline, as for ``clipood train``
    output: runs/domain_shift
    data_root: ${CLIPOOD_DATA}        # environment variables are expanded
    device: cuda
    seeds: [0, 1, 2]
    methods: [zeroshot, erm, clipood]
    overrides: {margin: 0.3}           # training settings for every run
    eval_zeroshot: true                # also measure the pretrained weights in each run
    experiments:                       # or one block's keys at the top level
      - protocol: domain_shift         # domain_shift | open_class | in_the_wild
        targets: all                   # or a list of domain names
        overrides: {beta: 0.5}
        datasets:
          - PACS                       # a name: the folder data_root/PACS
          - {name: OfficeHome, path: office_home, overrides: {lr: 1.0e-5}}

Open-class blocks take ``shots`` (16 by default) and run one target named ``all``.
``check_grid`` rejects an unknown target domain or an invalid training setting of any
run before the first run starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from clipood.data.coop import is_coop_dataset
from clipood.data.domainbed import DOMAINBED_DATASETS
from clipood.engine.config import TrainConfig, check_device
from clipood.engine.run_folder import write_json_atomic, write_text_atomic
from clipood.engine.train import checkpoint_config
from clipood.experiments.methods import METHODS
from clipood.experiments.protocol_run import (
    DEFAULT_MODEL,
    fresh_copy,
    method_settings,
    train_config_for,
)
from clipood.models.base import ImageTextModel, ModelSpec
from clipood.models.loading import load_model, parse_model_spec

log = logging.getLogger(__name__)

PROTOCOLS = ("domain_shift", "open_class", "in_the_wild")
ALL_TARGETS = "all"
DATA_ROOT_ENV = "CLIPOOD_DATA"
RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs" / "recipes"
_PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


# --- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a block: its table name, location and own settings."""

    name: str
    path: str | None = None
    targets: tuple[str, ...] | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)
    shots: int | None = None


@dataclass(frozen=True)
class Block:
    protocol: str
    datasets: tuple[DatasetEntry, ...]
    targets: tuple[str, ...] | None
    overrides: Mapping[str, object]
    shots: int
    methods: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass
class ExperimentConfig:
    """A parsed experiment file; ``data_root`` is ``None`` when nothing sets it."""

    model: str
    output: Path
    blocks: list[Block]
    data_root: Path | None = None
    device: str = "cpu"
    overrides: Mapping[str, object] = field(default_factory=dict)
    eval_zeroshot: bool = True
    skip_missing: bool = False
    model_options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid."""

    protocol: str
    dataset: DatasetEntry
    target: str
    method: str
    seed: int
    overrides: Mapping[str, object]
    shots: int

    def folder(self, output: Path) -> Path:
        parts = (self.protocol, self.dataset.name, self.target, self.method, f"seed{self.seed}")
        return output.joinpath(*(_safe(p) for p in parts))


def _safe(part: str) -> str:
    return str(part).replace("/", "_").replace("\\", "_")


def recipe_path(name: str) -> Path:
    """Return a packaged recipe's path by file name, with or without ``.yaml``."""
    path = RECIPE_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no recipe named {name!r}; available: {', '.join(names)}")
    return path


def load_experiment(
    path: Path | str, overrides: Mapping[str, object] | None = None
) -> ExperimentConfig:
    """Read an experiment YAML file; ``overrides`` replace its top-level keys first."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {path} not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise TypeError(f"experiment file {path} must hold a mapping of settings")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_experiment(data, source=str(path))


def parse_experiment(data: Mapping[str, object], source: str = "experiment") -> ExperimentConfig:
    """Validate an experiment mapping (see the module docstring for the keys)."""
    known = {"model", "output", "data_root", "device", "seeds", "methods", "overrides",
             "eval_zeroshot", "skip_missing", "experiments", "protocol", "datasets",
             "targets", "shots", "description", "model_options"}  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
    if not data.get("output"):
        raise ValueError(f"{source}: 'output' is missing; set it in the file or by flag")
    model = str(data.get("model") or DEFAULT_MODEL)
    parse_model_spec(model)
    seeds = tuple(int(s) for s in _as_list(data.get("seeds", [0])))
    negative = [s for s in seeds if s < 0]
    if negative:
        raise ValueError(f"{source}: seeds must be >= 0, got {negative}")
    methods = tuple(_as_list(data.get("methods", ["clipood"])))
    blocks_data = data.get("experiments") or [
        {k: data[k] for k in ("protocol", "datasets", "targets", "shots") if k in data}
    ]
    blocks = [_parse_block(b, seeds, methods, f"{source} block {i}") for i, b in enumerate(
        blocks_data)]  # fmt: skip
    return ExperimentConfig(
        model=model,
        output=Path(_expand(str(data["output"]), "output", source)).expanduser(),
        blocks=blocks,
        data_root=_data_root(data.get("data_root"), source),
        device=str(data.get("device", "cpu")),
        overrides=dict(data.get("overrides") or {}),
        eval_zeroshot=bool(data.get("eval_zeroshot", True)),
        skip_missing=bool(data.get("skip_missing", False)),
        model_options=dict(data.get("model_options") or {}),
    )


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _expand(text: str, key: str, source: str) -> str:
    expanded = os.path.expandvars(text)
    left = _PLACEHOLDER.search(expanded)
    if left:
        raise ValueError(
            f"{source}: '{key}' refers to the unset variable {left.group(0)}; set it in the "
            f"environment or pass --{key.replace('_', '-')}"
        )
    return expanded


def _data_root(value, source: str) -> Path | None:
    if value is None:
        value = os.environ.get(DATA_ROOT_ENV)
    return Path(_expand(str(value), "data_root", source)).expanduser() if value else None


def _parse_block(data, seeds, methods, source: str) -> Block:
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a mapping, got {data!r}")
    protocol = data.get("protocol")
    if protocol not in PROTOCOLS:
        raise ValueError(f"{source}: protocol {protocol!r}; expected one of {PROTOCOLS}")
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"{source}: unknown method {method!r}; expected one of {list(METHODS)}"
            )
    datasets = tuple(_parse_dataset(d, source) for d in _as_list(data.get("datasets") or []))
    if not datasets:
        raise ValueError(f"{source}: 'datasets' is empty; list at least one dataset")
    targets = data.get("targets", ALL_TARGETS)
    return Block(
        protocol=protocol,
        datasets=datasets,
        targets=None if targets == ALL_TARGETS else tuple(_as_list(targets)),
        overrides=dict(data.get("overrides") or {}),
        shots=int(data.get("shots", 16)),
        methods=tuple(_as_list(data.get("methods", methods))),
        seeds=tuple(int(s) for s in _as_list(data.get("seeds", seeds))),
    )


def _parse_dataset(entry, source: str) -> DatasetEntry:
    if isinstance(entry, str):
        return DatasetEntry(entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"{source}: dataset entry {entry!r} needs a 'name'")
    targets = entry.get("targets", ALL_TARGETS)
    return DatasetEntry(
        name=str(entry["name"]),
        path=entry.get("path"),
        targets=None if targets == ALL_TARGETS else tuple(_as_list(targets)),
        overrides=dict(entry.get("overrides") or {}),
        shots=entry.get("shots"),
    )


# --- the grid -----------------------------------------------------------------------


def dataset_location(entry: DatasetEntry, data_root: Path | None) -> str:
    """Return the path (or benchmark or CoOp name) that a protocol receives for ``entry``."""
    text = entry.path or entry.name
    if Path(text).expanduser().is_absolute() or data_root is None:
        return text
    if entry.path is None and (text.startswith("offline-") or is_coop_dataset(text)):
        return text
    return str(data_root / text)


def known_domains(entry: DatasetEntry, data_root: Path | None) -> list[str]:
    """Domain names of a dataset, from the registries when known, else from disk."""
    for name, domains in DOMAINBED_DATASETS.items():
        if entry.name.lower() == name.lower():
            return list(domains)
    if entry.name.startswith("offline-") and entry.path is None:
        import importlib

        module = importlib.import_module("clipood.data.benchmarks." + entry.name.replace("-", "_"))
        return list(module.DOMAINS)
    from clipood.experiments.in_the_wild import load_multi_domain

    return list(load_multi_domain(dataset_location(entry, data_root)).domains)


def expand_grid(config: ExperimentConfig) -> list[PlannedRun]:
    """List every run of the experiment in a stable order."""
    runs = []
    for block in config.blocks:
        for entry in block.datasets:
            targets = [ALL_TARGETS]
            if block.protocol != "open_class":
                targets = list(entry.targets or block.targets or [])
                targets = targets or known_domains(entry, config.data_root)
            overrides = {**config.overrides, **block.overrides, **entry.overrides}
            shots = int(entry.shots or block.shots)
            # dict.fromkeys drops repeated targets, methods and seeds but keeps the order.
            for target in dict.fromkeys(targets):
                for method in dict.fromkeys(block.methods):
                    for seed in dict.fromkeys(block.seeds):
                        runs.append(PlannedRun(block.protocol, entry, target, method, seed,
                                               overrides, shots))  # fmt: skip
    return runs


# Settings that each run of a grid sets itself, with where a user sets them instead.
PER_RUN_SETTINGS = {
    "seed": "--seeds or 'seeds' in the experiment file",
    "device": "--device or 'device' in the experiment file",
}


def check_no_per_run_overrides(overrides: Mapping[str, object]) -> None:
    """Raise ValueError if ``overrides`` sets a value that each run sets itself, because
    the override would contradict the run's folder name and summary."""
    for name, where in PER_RUN_SETTINGS.items():
        if name in overrides:
            raise ValueError(
                f"{name!r} cannot be overridden as a training setting, because each run sets "
                f"it from {where}"
            )


def check_grid(
    config: ExperimentConfig, runs: Sequence[PlannedRun], model_spec: ModelSpec | None = None
) -> None:
    """Raise ValueError naming the first unknown target domain, invalid training setting
    or run folder trained with other settings among ``runs``, so a bad grid fails before
    any run folder is written.

    ``model_spec`` is the model whose defaults the runs use (default: ``config.model``).
    Reads no images: domains come from the registries or the dataset's folder listing.
    """
    spec = model_spec or parse_model_spec(config.model)
    domains: dict[tuple[str, str | None], list[str]] = {}
    for run in runs:
        if run.protocol != "open_class":
            key = (run.dataset.name, run.dataset.path)
            if key not in domains:
                domains[key] = known_domains(run.dataset, config.data_root)
            if run.target not in domains[key]:
                raise ValueError(
                    f"unknown target domain {run.target!r} for dataset {run.dataset.name}; "
                    f"available domains: {', '.join(domains[key])}"
                )
        try:
            check_no_per_run_overrides(run.overrides)
            train_config = train_config_for(spec, run.protocol, run.dataset.name, run.method,
                                            run.seed, run.overrides, config.device)  # fmt: skip
        except ValueError as err:
            raise ValueError(
                f"invalid training settings for {run.protocol}/{run.dataset.name} "
                f"({run.method}): {err}; fix --set or the 'overrides' of the experiment file"
            ) from err
        if method_settings(run.method).loss is not None:
            check_same_as_saved(run.folder(config.output), train_config)


def check_same_as_saved(folder: Path, train_config: TrainConfig) -> None:
    """Raise ValueError if the run in ``folder``, finished or interrupted, was trained
    with settings that change the weights, so a rerun never reports old results under
    new settings or resumes a checkpoint made with other ones."""
    # NOTE: only training settings are compared. A rerun with another --model into the
    # same --output is not detected, because run folders are not named by model.
    saved = saved_train_config(folder)
    details = saved.describe_differences(train_config) if saved else ""
    if details:
        raise ValueError(
            f"run folder {folder} contains a run trained with other settings ({details}); use "
            "another --output, change the settings back, or delete that folder to run it "
            "again with these settings"
        )


def saved_train_config(folder: Path) -> TrainConfig | None:
    """Return the settings of the run in ``folder``, from its summary if it finished or
    its checkpoint if it was interrupted, or None if it has neither."""
    summary = folder / "summary.json"
    if summary.is_file():
        saved = json.loads(summary.read_text(encoding="utf-8")).get("train_config")
        return TrainConfig.from_dict(saved) if saved else None
    return checkpoint_config(folder)


# --- running ------------------------------------------------------------------------


def execute_run(run: PlannedRun, config: ExperimentConfig, model: ImageTextModel) -> dict:
    """Dispatch one run to its protocol and return the run's summary."""
    location = dataset_location(run.dataset, config.data_root)
    run_dir = run.folder(config.output)
    common = {"method": run.method, "seed": run.seed, "run_dir": run_dir,
              "data_root": config.data_root, "overrides": run.overrides,
              "device": config.device, "eval_zeroshot": config.eval_zeroshot}  # fmt: skip
    if run.protocol == "open_class":
        from clipood.experiments.open_class import run_open_class

        return run_open_class(model, location, shots=run.shots,
                              skip_missing=config.skip_missing, **common)  # fmt: skip
    if run.protocol == "in_the_wild":
        from clipood.experiments.in_the_wild import run_in_the_wild

        return run_in_the_wild(model, location, run.target, dataset_name=run.dataset.name,
                               **common)  # fmt: skip
    # NOTE: written before domain_shift.py existed; the call assumes the same keyword
    # arguments as run_in_the_wild and a summary whose "metrics" has "accuracy".
    from clipood.experiments.domain_shift import run_domain_shift

    return run_domain_shift(model, location, run.target, dataset_name=run.dataset.name,
                            **common)  # fmt: skip


@dataclass
class GridReport:
    """Counts of a grid run; ``failed`` lists ``(run folder, error message)``."""

    finished: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def run_experiment(
    config: ExperimentConfig,
    *,
    fail_fast: bool = False,
    model_factory: Callable[[], ImageTextModel] | None = None,
    model_spec: ModelSpec | None = None,
    progress: bool | None = None,
) -> GridReport:
    """Run every planned run not finished yet; record failures and go on unless ``fail_fast``.

    The pretrained model is loaded once (``model_factory`` or ``load_model``) and each run
    trains a deep copy of it. ``model_spec`` names the model ``model_factory`` builds, so
    its defaults are used when the grid is checked.
    """
    runs = expand_grid(config)
    check_grid(config, runs, model_spec)
    check_device("device", config.device, available=True)
    config.output.mkdir(parents=True, exist_ok=True)
    report = GridReport()
    pretrained: ImageTextModel | None = None
    bar = tqdm(runs, desc="experiment", unit="run", disable=_no_bar(progress))
    for run in bar:
        folder = run.folder(config.output)
        bar.set_postfix_str(str(folder.relative_to(config.output)))
        if (folder / "summary.json").is_file():
            report.skipped += 1
            continue
        if pretrained is None:
            pretrained = model_factory() if model_factory else load_model(
                config.model, device=config.device, **config.model_options)  # fmt: skip
        try:
            execute_run(run, config, fresh_copy(pretrained))
        except Exception as err:  # one failed run must not stop the grid
            if fail_fast:
                raise
            message = f"{type(err).__name__}: {err}"
            log.error("run %s failed: %s", folder, message)
            write_json_atomic(
                folder / "error.json", {"error": message, "traceback": traceback.format_exc()}
            )
            report.failed.append((folder, message))
        else:
            (folder / "error.json").unlink(missing_ok=True)
            report.finished += 1
        finally:
            write_results(config.output)
    write_results(config.output)
    return report


def _no_bar(progress: bool | None) -> bool | None:
    # tqdm treats disable=None as "disable when not writing to a terminal".
    return None if progress is None else not progress


# --- results.jsonl ------------------------------------------------------------------


def collect_records(output: Path) -> list[dict]:
    """Build one record per run folder under ``output`` with a summary or an error file."""
    records = []
    for path in sorted(output.glob("*/*/*/*/seed*")):
        if not path.is_dir():
            continue
        protocol, dataset, target, method, seed_text = path.relative_to(output).parts
        base = {"protocol": protocol, "dataset": dataset, "target": target,
                "method": method, "seed": int(seed_text.removeprefix("seed")),
                "run_dir": str(path)}  # fmt: skip
        summary, error = path / "summary.json", path / "error.json"
        if summary.is_file():
            data = json.loads(summary.read_text(encoding="utf-8"))
            records.append({**base, "status": "ok", **summary_metrics_by_weights(data)})
        elif error.is_file():
            data = json.loads(error.read_text(encoding="utf-8"))
            records.append({**base, "status": "error", "error": data.get("error", "")})
    return records


def summary_metrics(summary: Mapping[str, object]) -> dict[str, float]:
    """Return the numbers of the reported weights that the tables use."""
    return _numbers(summary.get("metrics") or {})


def summary_metrics_by_weights(summary: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """Return ``metrics`` and, for a run that reports other weights than its final ones,
    ``final_metrics``: the same numbers measured with the last training weights."""
    out = {"metrics": summary_metrics(summary)}
    final = (summary.get("by_weights") or {}).get("final")
    if final and summary.get("reported_weights") not in (None, "final"):
        out["final_metrics"] = _numbers(final)
    return out


def _numbers(metrics: Mapping[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def write_results(output: Path) -> Path:
    """Rewrite ``output/results.jsonl`` atomically from the run folders."""
    lines = [json.dumps(r, ensure_ascii=False) for r in collect_records(output)]
    path = output / "results.jsonl"
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return path


def describe_grid(runs: Sequence[PlannedRun], output: Path) -> str:
    """List one line per run: its folder and whether it is already finished."""
    lines = []
    for run in runs:
        folder = run.folder(output)
        state = "done" if (folder / "summary.json").is_file() else "todo"
        lines.append(f"{state}  {folder}")
    return "\n".join(lines)
