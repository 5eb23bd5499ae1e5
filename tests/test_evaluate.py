"""Evaluation: accuracy against a hand computation, class subsets, empty inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model

from clipood.data.domainbed import load_domainbed
from clipood.data.samples import load_rgb
from clipood.engine import evaluate


def expected_predictions(model, samples, classnames, classes):
    model.eval()
    text = model.class_embeddings(classnames)[classes]
    images = torch.stack([model.eval_transform(load_rgb(s.path)) for s in samples])
    with torch.no_grad():
        return model.logits(images, text).argmax(dim=-1)


def test_accuracy_matches_direct_computation(tiny_domainbed):
    dataset = load_domainbed(tiny_domainbed)
    samples = dataset.domains["photo"]
    model = build_tiny_model()
    result = evaluate(model, samples, dataset.classnames, batch_size=4)

    predicted = expected_predictions(model, samples, dataset.classnames, [0, 1, 2])
    labels = torch.tensor([s.label for s in samples])
    correct = int((predicted == labels).sum())
    assert result.total == len(samples) == 18
    assert result.correct == correct
    assert result.accuracy == correct / 18
    assert sum(c for c, _ in result.per_class.values()) == correct
    assert {label: total for label, (_, total) in result.per_class.items()} == {0: 6, 1: 6, 2: 6}


def test_class_subset_classifies_among_subset(tiny_domainbed):
    dataset = load_domainbed(tiny_domainbed)
    samples = dataset.domains["sketch"]
    model = build_tiny_model()
    subset = [2, 0]
    result = evaluate(model, samples, dataset.classnames, class_subset=subset)

    kept = [s for s in samples if s.label in subset]
    predicted = expected_predictions(model, kept, dataset.classnames, subset)
    predicted_labels = torch.tensor(subset)[predicted]
    labels = torch.tensor([s.label for s in kept])
    assert result.total == 12
    assert result.correct == int((predicted_labels == labels).sum())
    assert set(result.per_class) == {0, 2}


def test_empty_samples_raise(tiny_domainbed):
    dataset = load_domainbed(tiny_domainbed)
    model = build_tiny_model()
    with pytest.raises(ValueError, match="the sample list has no images"):
        evaluate(model, [], dataset.classnames)
    only_first = [s for s in dataset.domains["photo"] if s.label == 0]
    with pytest.raises(ValueError, match="the class subset has no images"):
        evaluate(model, only_first, dataset.classnames, class_subset=[1])
    with pytest.raises(ValueError, match="outside 0..2"):
        evaluate(model, only_first, dataset.classnames, class_subset=[3])
