"""Time one Beta-moving-average update: fused foreach lerp against a per-parameter loop.

The per-parameter loop mirrors a plain Python implementation that walks the
parameters and updates each average with separate tensor operations. Both keep a
float32 average. Run: ``python benchmarks/bench_averaging.py --model vit_base_patch16_224``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import timm
import torch

from clipood.averaging import BetaMovingAverage


def loop_update(average: list[torch.Tensor], module: torch.nn.Module, weight: float) -> None:
    with torch.no_grad():
        for avg, param in zip(average, module.parameters(), strict=True):
            avg.mul_(1.0 - weight).add_(param.detach().float(), alpha=weight)


def time_calls(function, repeats: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit_base_patch16_224", help="timm model name")
    parser.add_argument("--repeats", type=int, default=10, help="timed updates per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    module = timm.create_model(args.model, pretrained=False, num_classes=0)
    parameters = sum(p.numel() for p in module.parameters())
    bma = BetaMovingAverage(module, total_steps=1000, beta=0.5)
    loop_average = [p.detach().float().clone() for p in module.parameters()]

    fused = time_calls(lambda: bma.update(module, 500), args.repeats)
    looped = time_calls(lambda: loop_update(loop_average, module, 0.01), args.repeats)
    result = {
        "model": args.model,
        "parameters": parameters,
        "tensors": len(loop_average),
        "threads": args.threads,
        "fused_ms": round(fused * 1e3, 2),
        "loop_ms": round(looped * 1e3, 2),
        "speedup": round(looped / fused, 2),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
