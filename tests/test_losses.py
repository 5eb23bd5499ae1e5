"""Margin metric softmax: both logit forms, the margin-0 limit and the margin values."""

import pytest
import torch
import torch.nn.functional as F

from clipood.losses import (
    MarginMetricSoftmax,
    margin_metric_logits,
    margin_metric_logits_shifted,
)


def random_embeddings(seed: int, batch: int = 8, classes: int = 5, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return images, texts, labels


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.3, 1.0])
def test_margin_and_shifted_forms_same_loss(margin):
    images, texts, labels = random_embeddings(0)
    margin_form = margin_metric_logits(images, texts, labels, 100.0, margin)
    shifted_form = margin_metric_logits_shifted(images, texts, labels, 100.0, margin)
    loss_margin = F.cross_entropy(margin_form, labels)
    loss_shifted = F.cross_entropy(shifted_form, labels)
    torch.testing.assert_close(loss_margin, loss_shifted, rtol=0, atol=1e-12)


def test_forms_differ_by_row_constant():
    images, texts, labels = random_embeddings(1)
    difference = margin_metric_logits(images, texts, labels, 30.0, 0.3) - (
        margin_metric_logits_shifted(images, texts, labels, 30.0, 0.3)
    )
    # The margin form adds tau * lam to every logit of a row.
    torch.testing.assert_close(difference, torch.full_like(difference, 30.0 * 0.3))


def test_margin_zero_is_cross_entropy():
    images, texts, labels = random_embeddings(2)
    loss = MarginMetricSoftmax(margin=0.0)(images, texts, labels, 50.0)
    expected = F.cross_entropy(50.0 * images @ texts.T, labels)
    torch.testing.assert_close(loss, expected.float(), rtol=0, atol=1e-6)


def test_true_class_margin_zero_and_wrong_classes_scaled():
    texts = torch.eye(3, dtype=torch.float64)
    texts[2] = F.normalize(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), dim=0)
    images = torch.zeros(1, 3, dtype=torch.float64)
    labels = torch.tensor([0])
    logits = margin_metric_logits(images, texts, labels, 1.0, 0.5)
    # Class 0 is the true class: margin 0. Class 1 is orthogonal: 0.5 * (1 - 0).
    # Class 2 has cosine 1/sqrt(2) with class 0: 0.5 * (1 - 0.7071...).
    expected = torch.tensor([[0.0, 0.5, 0.5 * (1 - 2**-0.5)]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)


def test_module_matches_margin_form():
    images, texts, labels = random_embeddings(3)
    loss = MarginMetricSoftmax(margin=0.3)(images, texts, labels, 100.0)
    expected = F.cross_entropy(margin_metric_logits(images, texts, labels, 100.0, 0.3), labels)
    torch.testing.assert_close(loss, expected.float(), rtol=1e-6, atol=1e-6)


def test_margin_raises_loss_of_correct_predictions():
    images, texts, labels = random_embeddings(4)
    plain = MarginMetricSoftmax(0.0)(images, texts, labels, 10.0)
    with_margin = MarginMetricSoftmax(0.3)(images, texts, labels, 10.0)
    assert with_margin > plain


def test_negative_margin_rejected():
    with pytest.raises(ValueError, match="margin must be >= 0, got -0.1"):
        MarginMetricSoftmax(-0.1)
