"""The offline demo: zero-shot, plain fine-tuning and CLIPood on every target domain of
the ``offline-domains`` benchmark, with one budget and one seed.

It builds (or reuses) the offline default model and the benchmark, then for each target
runs the ``zeroshot``, ``erm`` and ``clipood`` methods, and writes ``results.md``,
``results.json`` and ``results.png`` to the output folder. One seed of a few dozen steps
shows the mechanics, not a significant comparison: the spread over seeds is not
measured here (use ``clipood experiment run`` with several seeds for that).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from clipood.engine.run_folder import write_json_atomic, write_text_atomic
from clipood.experiments.domain_shift import run_domain_shift
from clipood.experiments.plots import plot_grouped_bars

logger = logging.getLogger(__name__)

BENCHMARK = "offline-domains"
METHODS = ("zeroshot", "erm", "clipood")
# Table column -> (method, weights).
COLUMNS = {
    "zero-shot": ("zeroshot", "zeroshot"),
    "fine-tune": ("erm", "final"),
    "CLIPood final": ("clipood", "final"),
    "CLIPood BMA": ("clipood", "averaged"),
}
MEAN_ROW = "mean"


@dataclass
class DemoSettings:
    """Budget of the demo; ``batch_size`` is per source domain, ``image_size`` in pixels
    is used for both the benchmark images and the model input."""

    output: Path = Path("runs/demo")
    steps: int = 60
    batch_size: int = 16
    image_size: int = 128
    per_class: int = 50
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None
    data_root: Path | None = None
    quick_model: bool = False
    targets: tuple[str, ...] | None = None


def prepare(settings: DemoSettings):
    """Build or reuse the offline model and the benchmark; return the model and data path."""
    from clipood.data.benchmarks import build_benchmark, default_cache
    from clipood.models.loading import load_model
    from clipood.models.offline import build_offline_model

    cache = settings.cache_dir or default_cache()
    logger.info("step 1/3: offline model (built once and cached; minutes on a CPU)")
    build_offline_model(settings.cache_dir, quick=settings.quick_model)
    logger.info("step 2/3: %s benchmark at %d px", BENCHMARK, settings.image_size)
    root = settings.data_root or cache / "benchmarks"
    data = build_benchmark(
        BENCHMARK, root, image_size=settings.image_size, per_class=settings.per_class
    )
    spec = "offline:quick" if settings.quick_model else "offline"
    model = load_model(spec, device=settings.device, image_size=settings.image_size)
    return model, data


def run_demo(settings: DemoSettings) -> dict:
    """Run the demo and return ``{"rows": {target: {column: accuracy}}, ...}``."""
    from clipood.data.domainbed import load_domainbed

    start = time.perf_counter()
    model, data_path = prepare(settings)
    dataset = load_domainbed(data_path)
    targets = list(settings.targets or dataset.domains)
    pretrained = {k: v.detach().clone() for k, v in model.image_encoder.state_dict().items()}
    overrides = {"steps": settings.steps, "batch_size": settings.batch_size}
    summaries: dict[str, dict[str, dict]] = {}
    for i, target in enumerate(targets, start=1):
        summaries[target] = {}
        for method in METHODS:
            logger.info("step 3/3: target %s (%d of %d), %s", target, i, len(targets), method)
            model.image_encoder.load_state_dict(pretrained)
            summaries[target][method] = run_domain_shift(
                model,
                dataset,
                target,
                method,
                settings.seed,
                settings.output / "runs" / target / method,
                overrides=overrides if method != "zeroshot" else None,
                device=settings.device,
                eval_zeroshot=method == "zeroshot",
                dataset_name=BENCHMARK,
            )
    results = collect(summaries, settings, time.perf_counter() - start)
    write_results(results, settings.output)
    return results


def collect(summaries: dict, settings: DemoSettings, seconds: float) -> dict:
    rows = {}
    for target, by_method in summaries.items():
        rows[target] = {
            column: by_method[method]["by_weights"][weights]["accuracy"]
            for column, (method, weights) in COLUMNS.items()
        }
    rows[MEAN_ROW] = {
        column: sum(rows[t][column] for t in summaries) / len(summaries) for column in COLUMNS
    }
    settings_record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    return {
        "benchmark": BENCHMARK,
        "seed": settings.seed,
        "settings": settings_record,
        "columns": list(COLUMNS),
        "rows": rows,
        "seconds": round(seconds, 1),
    }


def format_table(results: dict) -> str:
    """Markdown table of accuracies in percent, targets as rows and the mean last."""
    columns = results["columns"]
    caption = (
        f"Target-domain accuracy (%) on {results['benchmark']}, seed {results['seed']}, "
        f"{results['settings']['steps']} steps per run (one seed: no spread measured)."
    )
    lines = [
        caption,
        "",
        "| target | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for target, values in results["rows"].items():
        cells = " | ".join(f"{100 * values[c]:.1f}" for c in columns)
        lines.append(f"| {target} | {cells} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "results.json", results)
    write_text_atomic(output / "results.md", format_table(results))
    title = f"{results['benchmark']}, seed {results['seed']}"
    plot_grouped_bars(results["rows"], results["columns"], output / "results.png", title)
