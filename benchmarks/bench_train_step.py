"""Time fine-tuning steps of a model's image tower in fp32 and bf16 autocast.

Each step is what the engine does per batch: forward the image tower, margin metric
softmax against cached class embeddings, backward, AdamW step on float32 master
weights and one Beta-moving-average update. Random images stand in for data, so the
numbers exclude image decoding. Run:
``python benchmarks/bench_train_step.py --model offline --image-size 128 --batch-size 32``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from clipood.averaging import BetaMovingAverage
from clipood.engine.precision import autocast
from clipood.losses import MarginMetricSoftmax
from clipood.models import load_model


def run_steps(model, precision: str, images, labels, classes, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.image_encoder.parameters(), lr=1e-5, weight_decay=0.1)
    average = BetaMovingAverage(model.image_encoder, total_steps=steps + 1, beta=0.5)
    loss_fn = MarginMetricSoftmax(margin=0.05)
    model.train()
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # step 0 is a warm-up
        with autocast(precision, "cpu"):
            embeddings = model.encode_image(images)
        loss = loss_fn(embeddings, classes, labels, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average.update(model.image_encoder, step + 1)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="offline", help="model string, as for --model")
    parser.add_argument("--image-size", type=int, default=128, help="image side, in pixels")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = load_model(args.model, image_size=args.image_size)
    classes = model.class_embeddings([f"class {i}" for i in range(10)])
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    result = {"model": args.model, "image_size": args.image_size, "batch_size": args.batch_size}
    for precision in ("fp32", "bf16"):
        seconds = run_steps(model, precision, images, labels, classes, args.steps)
        result[f"{precision}_s_per_step"] = round(seconds, 3)
        result[f"{precision}_images_per_s"] = round(args.batch_size / seconds, 1)
    result["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["threads"] = args.threads
    result["machine"] = platform.machine()
    result["torch"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
