"""Classification losses over a frozen text-embedding classifier.

Margin metric softmax (MMS) comes from "CLIPood: Generalizing CLIP to
Out-of-Distributions" (Shu et al., ICML 2023). With normalised image embedding
``v``, normalised class text embeddings ``t``, true class ``y``, temperature
``tau`` and margin weight ``lam``, the logit of class ``j`` is::

    tau * (v . t_j + lam * (1 - t_y . t_j))

The true class gets margin 0. Because ``lam * 1`` is shared by every class it
cancels in the softmax, so the same loss follows from ``tau * (v - lam * t_y) . t_j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def margin_metric_logits(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float,
    margin: float,
) -> torch.Tensor:
    """Compute MMS logits in the margin form, shape ``(batch, classes)``.

    Both embeddings must already be L2-normalised.
    """
    similarity = image_embeddings @ text_embeddings.T
    true_text = text_embeddings[labels]
    text_similarity = true_text @ text_embeddings.T
    return logit_scale * (similarity + margin * (1.0 - text_similarity))


def margin_metric_logits_shifted(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float,
    margin: float,
) -> torch.Tensor:
    """Compute MMS logits in the subtraction form, equal to the margin form up to a
    per-row constant, so both give the same softmax and cross-entropy."""
    shifted = image_embeddings - margin * text_embeddings[labels]
    return logit_scale * (shifted @ text_embeddings.T)


class MarginMetricSoftmax(nn.Module):
    """Cross-entropy over margin metric logits; ``margin=0`` is plain cross-entropy.

    ``logit_bias`` is added to every logit (SigLIP-style models carry one); it
    cancels in the softmax and is accepted so logits match the model's own.
    """

    def __init__(self, margin: float = 0.0, logit_bias: float = 0.0):
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.logit_bias = float(logit_bias)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        labels: torch.Tensor,
        logit_scale: float,
    ) -> torch.Tensor:
        # Compute in float32 even under autocast: the margins are small
        # differences of cosines and bf16 keeps only 8 bits of mantissa.
        image_embeddings = image_embeddings.float()
        text_embeddings = text_embeddings.float()
        if self.margin == 0.0:
            logits = logit_scale * (image_embeddings @ text_embeddings.T)
        else:
            logits = margin_metric_logits_shifted(
                image_embeddings, text_embeddings, labels, logit_scale, self.margin
            )
        return F.cross_entropy(logits + self.logit_bias, labels)
