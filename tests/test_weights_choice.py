"""Which saved weights a run loads by default, and the error when they are missing."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model
from safetensors.torch import save_file

from clipood.engine.checkpoint import load_run_weights, resolve_weights


def make_run(tmp_path, reported=None, files=("final",)):
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    for name in files:
        save_file({"w": torch.zeros(1)}, str(run / "weights" / f"{name}.safetensors"))
    if reported is not None:
        (run / "summary.json").write_text(json.dumps({"reported_weights": reported}))
    return run


def test_auto_takes_reported_weights(tmp_path):
    run = make_run(tmp_path, reported="final", files=("final", "averaged"))
    assert resolve_weights(run) == "final"
    assert resolve_weights(run, "averaged") == "averaged"


def test_auto_without_summary_prefers_averaged(tmp_path):
    assert resolve_weights(make_run(tmp_path, files=("final", "averaged"))) == "averaged"


def test_auto_without_summary_falls_back_to_final(tmp_path):
    assert resolve_weights(make_run(tmp_path, files=("final",))) == "final"


def test_missing_reported_weights_is_an_error(tmp_path):
    run = make_run(tmp_path, reported="averaged", files=("final",))
    assert resolve_weights(run) == "averaged"
    with pytest.raises(FileNotFoundError, match="averaged.safetensors not found.*--weights final"):
        load_run_weights(build_tiny_model(), run)
