"""clipood: fine-tune CLIP-style image-text models that stay accurate out of distribution.

Implements CLIPood (Shu et al., "CLIPood: Generalizing CLIP to Out-of-Distributions",
ICML 2023): margin metric softmax and the Beta moving average, plus the baselines it is
compared with, on OpenCLIP, Hugging Face and an offline default backend.
"""

__version__ = "0.1.0"

from clipood.averaging import BetaMovingAverage, beta_weights
from clipood.losses import MarginMetricSoftmax, margin_metric_logits

__all__ = ["BetaMovingAverage", "MarginMetricSoftmax", "beta_weights", "margin_metric_logits"]
