"""In-the-wild protocol end to end on a PACS-named DomainBed tree with the tiny model."""

from __future__ import annotations

import json

import pytest
from conftest import write_tiny_domainbed

from clipood.experiments.in_the_wild import (
    evaluate_wild,
    load_multi_domain,
    per_class_accuracy,
    run_in_the_wild,
)
from clipood.experiments.tables import harmonic_mean

PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse")
FAST = {"steps": 2, "batch_size": 3, "lr": 1e-3, "margin": 0.05, "eval_batch_size": 32}


@pytest.fixture
def pacs(tmp_path):
    return write_tiny_domainbed(
        tmp_path / "PACS", images_per_class=5, domains=PACS_DOMAINS, classes=PACS_CLASSES
    )


def test_per_class_accuracy_pools_counts():
    per_class = {0: (3, 4), 1: (1, 4), 2: (0, 2)}
    assert per_class_accuracy(per_class, [0, 1]) == {"accuracy": 0.5, "images": 8}
    with pytest.raises(ValueError, match="no images"):
        per_class_accuracy(per_class, [7])


def test_evaluate_wild_counts_all_classes(pacs, tiny_model):
    data = load_multi_domain(pacs)
    target = data.domains["sketch"]
    metrics = evaluate_wild(tiny_model, target, data.classnames, [0, 1, 2], [3, 4],
                            ("a photo of a {}.",))  # fmt: skip
    assert metrics["base_images"] == 15
    assert metrics["new_images"] == 10
    pooled = (metrics["base"] * 15 + metrics["new"] * 10) / 25
    assert metrics["total"] == pytest.approx(pooled, abs=1e-12)
    assert metrics["H"] == pytest.approx(harmonic_mean(metrics["base"], metrics["new"]))


def test_run_in_the_wild_end_to_end(pacs, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_in_the_wild(
        tiny_model, pacs, "sketch", method="erm", seed=0, run_dir=run_dir, overrides=FAST
    )
    assert summary["dataset"] == "PACS"
    assert summary["sources"] == ["art_painting", "cartoon", "photo"]
    assert summary["classes"]["base"] == ["dog", "elephant", "giraffe"]
    assert summary["classes"]["new"] == ["guitar", "horse"]
    # Each source keeps ceil(0.8 * 25) = 20 images in its in split; 12 of them are base.
    train_counts = summary["counts"]["train"]
    assert len(train_counts) == 3
    assert all(count <= 15 for count in train_counts)
    assert summary["counts"]["held_out"] == 3 * 5
    assert summary["counts"]["test"] == 25
    assert summary["reported_weights"] == "final"
    assert set(summary["by_weights"]) == {"zeroshot", "final"}
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["metrics"] == summary["by_weights"]["final"]
    model_json = json.loads((run_dir / "model.json").read_text())
    assert model_json["classnames"] == ["dog", "elephant", "giraffe"]


def test_training_groups_hold_base_classes_only(pacs):
    from clipood.experiments.in_the_wild import _source_groups

    data = load_multi_domain(pacs)
    groups, held_out = _source_groups(data, "photo", [0, 1, 2], 0.2, seed=0)
    assert len(groups) == 3
    assert all({s.label for s in group} <= {0, 1, 2} for group in groups)
    assert all({s.domain for s in group} != {"photo"} for group in groups)
    assert held_out == 15
    target_paths = {s.path for s in data.domains["photo"]}
    assert not {s.path for group in groups for s in group} & target_paths


def test_manifest_with_domains(tmp_path, pacs):
    lines = ["path,label,domain"]
    for domain in ("photo", "sketch"):
        for path in sorted((pacs / domain).glob("*/*.png")):
            lines.append(f"{path},{path.parent.name},{domain}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    data = load_multi_domain("m.csv", data_root=tmp_path)
    assert list(data.domains) == ["photo", "sketch"]
    assert data.classnames == list(PACS_CLASSES)


def test_unknown_target_rejected(pacs, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="unknown target domain"):
        run_in_the_wild(tiny_model, pacs, "quickdraw", run_dir=tmp_path / "r", overrides=FAST)
