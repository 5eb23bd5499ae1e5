"""Data-parallel training on CPU with the Gloo backend, launched by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, write_tiny_domainbed
from safetensors.torch import load_file

from clipood.data.domainbed import load_domainbed
from clipood.engine import TrainConfig, fit

TESTS_DIR = Path(__file__).parent
CONFIG = {"steps": 3, "batch_size": 4, "lr": 1e-3, "log_every": 1, "averaging": "bma"}

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {tests!r})
    from conftest import build_tiny_model
    from clipood.data.domainbed import load_domainbed
    from clipood.engine import TrainConfig, fit
    from clipood.engine.checkpoint import save_state_atomic
    from clipood.engine.distributed import shutdown

    torch.set_num_threads(1)
    dataset = load_domainbed({data!r})
    groups = [dataset.domains["clipart"], dataset.domains["photo"]]
    model = build_tiny_model(dropout=0.0)
    result = fit(model, groups, dataset.classnames, TrainConfig(**{config!r}), Path({run!r}))
    rank = os.environ["RANK"]
    save_state_atomic(result.final_state, Path({out!r}) / f"rank{{rank}}.safetensors")
    shutdown()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_ranks_match_single_process(tmp_path):
    data = write_tiny_domainbed(tmp_path / "tiny")
    script = tmp_path / "worker.py"
    run = tmp_path / "run"
    script.write_text(
        WORKER.format(
            tests=str(TESTS_DIR), data=str(data), config=CONFIG, run=str(run), out=str(tmp_path)
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    completed = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=170, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    for name, value in rank0.items():
        assert torch.equal(rank1[name], value), name
    for name in (
        "model.json",
        "metrics.jsonl",
        "weights/final.safetensors",
        "weights/averaged.safetensors",
        "checkpoint/last.pt",
    ):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one train record per step, written once (by rank 0)

    # Each rank took half of every group's batch, so the job trained on the same global
    # batches as one process does; only the order of the gradient sums differs.
    torch.set_num_threads(1)
    dataset = load_domainbed(data)
    groups = [dataset.domains["clipart"], dataset.domains["photo"]]
    single = fit(
        build_tiny_model(dropout=0.0),
        groups,
        dataset.classnames,
        TrainConfig(**CONFIG),
        tmp_path / "single",
    )
    for name, value in single.final_state.items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5)
