"""The training loop (precision, distributed, checkpoints, resume) and evaluation."""

from clipood.engine.checkpoint import load_run_model, load_run_weights, save_state_atomic
from clipood.engine.config import TrainConfig
from clipood.engine.evaluate import EvalResult, evaluate
from clipood.engine.run_folder import RunFolder
from clipood.engine.train import FitResult, fit

__all__ = [
    "EvalResult",
    "FitResult",
    "RunFolder",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_run_model",
    "load_run_weights",
    "save_state_atomic",
]
