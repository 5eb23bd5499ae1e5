"""Every packaged recipe parses and resolves without loading weights or data."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipood.data.benchmarks import BENCHMARKS
from clipood.data.coop import is_coop_dataset
from clipood.data.domainbed import DOMAINBED_DATASETS
from clipood.experiments import runner
from clipood.experiments.protocol_run import train_config_for
from clipood.models.loading import parse_model_spec

RECIPES = sorted(p.stem for p in runner.RECIPE_DIR.glob("*.yaml"))
# Runs per recipe: targets x methods x seeds, summed over datasets.
EXPECTED_RUNS = {
    "domain_shift": (4 + 4 + 4 + 4 + 6) * 3 * 5,
    "base_to_new": 11 * 3 * 3,
    "in_the_wild": (4 + 6) * 3 * 5,
    "offline": (3 + 1 + 3) * 3 * 5,
}


def test_recipe_set_complete():
    assert RECIPES == sorted(EXPECTED_RUNS)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_resolves(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPOOD_DATA", str(tmp_path))
    config = runner.load_experiment(runner.recipe_path(name))
    spec = parse_model_spec(config.model)
    assert config.data_root in (tmp_path, None)
    runs = runner.expand_grid(config)
    assert len(runs) == EXPECTED_RUNS[name]
    assert len({run.folder(config.output) for run in runs}) == len(runs)
    for run in runs:
        entry = run.dataset.name
        assert entry in DOMAINBED_DATASETS or is_coop_dataset(entry) or entry in BENCHMARKS, entry
        train = train_config_for(spec, run.protocol, entry, run.method, run.seed, run.overrides,
                                 config.device)  # fmt: skip
        assert train.seed == run.seed


def test_paper_settings_in_recipes(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPOOD_DATA", str(tmp_path))
    config = runner.load_experiment(runner.recipe_path("domain_shift"))
    spec = parse_model_spec(config.model)
    assert (spec.backend, spec.name, spec.pretrained) == ("open_clip", "ViT-B-16", "openai")
    by_dataset = {run.dataset.name: run for run in runner.expand_grid(config)}
    pacs = train_config_for(
        spec, "domain_shift", "PACS", "clipood", 0, by_dataset["PACS"].overrides
    )
    assert (pacs.margin, pacs.beta, pacs.lr, pacs.batch_size, pacs.steps) == (
        0.3,
        0.5,
        5e-6,
        12,
        5000,
    )
    assert (pacs.loss, pacs.averaging) == ("mms", "bma")
    net = train_config_for(spec, "domain_shift", "DomainNet", "erm", 0,
                           by_dataset["DomainNet"].overrides)  # fmt: skip
    assert (net.lr, net.steps, net.loss, net.averaging) == (1e-5, 10000, "ce", "none")

    wild = runner.load_experiment(runner.recipe_path("in_the_wild"))
    runs = {r.dataset.name: r for r in runner.expand_grid(wild)}
    office = train_config_for(spec, "in_the_wild", "OfficeHome", "clipood", 0,
                              runs["OfficeHome"].overrides)  # fmt: skip
    assert (office.margin, office.beta, office.lr) == (0.1, 0.1, 3e-6)
    domainnet = train_config_for(spec, "in_the_wild", "DomainNet", "clipood", 0,
                                 runs["DomainNet"].overrides)  # fmt: skip
    assert (domainnet.beta, domainnet.lr, domainnet.steps) == (0.5, 5e-6, 10000)

    coop = runner.load_experiment(runner.recipe_path("base_to_new"))
    run = runner.expand_grid(coop)[0]
    assert run.shots == 16
    settings = train_config_for(spec, "open_class", run.dataset.name, "clipood", 1, run.overrides)
    assert (settings.margin, settings.beta, settings.lr, settings.batch_size) == (
        0.3,
        0.1,
        5e-6,
        36,
    )


def test_recipe_needs_data_root(monkeypatch):
    monkeypatch.delenv("CLIPOOD_DATA", raising=False)
    with pytest.raises(ValueError, match="CLIPOOD_DATA"):
        runner.load_experiment(runner.recipe_path("domain_shift"))
    config = runner.load_experiment(runner.recipe_path("domain_shift"), {"data_root": "/data"})
    assert str(config.data_root) == "/data"


def test_unknown_recipe_lists_names():
    with pytest.raises(FileNotFoundError, match="domain_shift"):
        runner.recipe_path("nope")


def test_offline_tables_config_resolves():
    path = Path(__file__).resolve().parents[1] / "configs" / "offline_tables.yaml"
    config = runner.load_experiment(path)
    runs = runner.expand_grid(config)
    # Domain shift: 3 targets; open class: 1; in the wild: 3 targets. 3 methods x 5 seeds.
    assert len(runs) == (3 + 1 + 3) * 3 * 5
    assert config.model_options == {"image_size": 128}
    assert config.overrides == {"steps": 40}
