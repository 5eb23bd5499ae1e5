"""Fine-tune the image encoder of an image-text model on balanced multi-group batches.

Only ``model.image_encoder`` is optimised; class text embeddings are computed once from
the frozen text tower. ``model.train()`` keeps normalisation layers in eval mode, so
BatchNorm running statistics never change. Every optimiser step folds the new weights
into the weight average (the pretrained weights are its step 0).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clipood.averaging import WeightAverage, make_averager
from clipood.data.samples import ImageSample
from clipood.engine.checkpoint import (
    capture_rng_state,
    load_state,
    load_training_state,
    restore_rng_state,
    save_model_description,
    save_state_atomic,
    save_training_state,
)
from clipood.engine.config import TrainConfig
from clipood.engine.distributed import (
    DistributedContext,
    barrier,
    context_from_env,
    init_distributed,
    mean_across_ranks,
)
from clipood.engine.evaluate import evaluate
from clipood.engine.metrics import MetricsLog, read_records
from clipood.engine.optim import build_optimizer, build_scheduler
from clipood.engine.precision import autocast, make_grad_scaler
from clipood.engine.run_folder import RunFolder, write_yaml_atomic
from clipood.engine.sampling import (
    BalancedBatchSampler,
    SeededImageDataset,
    check_batch_size,
    derive_seed,
)
from clipood.losses import MarginMetricSoftmax
from clipood.models.base import ImageTextModel

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, ImageTextModel], None]

__all__ = ["FitResult", "TrainConfig", "check_resumable", "checkpoint_config", "fit"]


@dataclass
class FitResult:
    """Image-encoder weights after the last step and of the weight average (``None``
    without averaging), the metric records, and the number of optimiser steps."""

    final_state: dict[str, torch.Tensor]
    averaged_state: dict[str, torch.Tensor] | None
    history: list[dict] = field(default_factory=list)
    steps: int = 0


def fit(
    model: ImageTextModel,
    train_groups: Sequence[Sequence[ImageSample]],
    classnames: Sequence[str],
    config: TrainConfig,
    run_dir: Path,
    val_samples: Sequence[ImageSample] | None = None,
    resume: bool = True,
    *,
    on_step: StepCallback | None = None,
) -> FitResult:
    """Fine-tune ``model.image_encoder`` in place and write the run folder.

    With ``resume=True`` a run folder holding ``checkpoint/last.pt`` continues from it
    (the settings that shape the weights must match), and a finished run returns its
    saved result without training. With ``resume=False`` earlier training files in the
    folder are removed first. ``on_step(step, model)`` runs after every optimiser step.
    Under ``torchrun`` only rank 0 writes files; every rank returns the same weights.
    """
    config.validate()
    groups = [list(group) for group in train_groups]
    check_batch_size(config.batch_size, groups, context_from_env().world_size)
    run = RunFolder(Path(run_dir))
    context, device = init_distributed(config.device)
    if resume:
        finished = load_finished_run(model, run, config)
        if finished is not None:
            logger.info("run in %s already finished; returning its saved weights", run.root)
            return finished
    elif context.is_main:
        clear_training_files(run)
    barrier(context)

    trainer = Trainer(model, list(classnames), config, context, device, run, val_samples)
    start_step = trainer.resume_from(run.checkpoint) if resume else 0
    return trainer.train(groups, start_step, on_step)


class Trainer:
    """The state of one run: model, optimiser, schedule, loss scaler and weight average."""

    def __init__(
        self,
        model: ImageTextModel,
        classnames: list[str],
        config: TrainConfig,
        context: DistributedContext,
        device: str,
        run: RunFolder,
        val_samples: Sequence[ImageSample] | None,
    ):
        self.model = model.to(device)
        self.encoder = model.image_encoder.float()  # float32 master weights
        self.classnames = classnames
        self.config = config
        self.context = context
        self.device = device
        self.run = run
        self.val_samples = list(val_samples) if val_samples else []
        self.text = model.class_embeddings(classnames, config.templates).to(device)
        margin = config.margin if config.loss == "mms" else 0.0
        self.criterion = MarginMetricSoftmax(margin, model.logit_bias or 0.0)
        self.optimizer = build_optimizer(self.encoder, config.lr, config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config.steps, config.warmup_steps)
        self.scaler = make_grad_scaler(config.precision, device)
        self.averager: WeightAverage | None = make_averager(
            config.averaging,
            self.encoder,
            config.steps,
            config.beta,
            config.ema_decay,
            device=config.average_device,
        )
        self.forward_encoder = self.encoder
        if context.enabled:
            device_ids = (
                [torch.device(device).index] if torch.device(device).type == "cuda" else None
            )
            self.forward_encoder = DistributedDataParallel(self.encoder, device_ids=device_ids)
        self.step = 0
        self.pending_rng: dict | None = None
        self.loss_sum = 0.0
        self.loss_count = 0

    # --- resume -----------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "image_encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "averager": self.averager.state_dict() if self.averager else {},
            "sampler": {"seed": self.config.seed, "next_step": self.step},
            "loss_window": [self.loss_sum, self.loss_count],
            "rng": capture_rng_state(),
        }

    def resume_from(self, path: Path) -> int:
        """Load ``path`` if it exists and return the step to continue after (0 if none)."""
        if not path.is_file():
            return 0
        state = load_training_state(path)
        check_same_settings(TrainConfig.from_dict(state["config"]), self.config, path)
        self.encoder.load_state_dict(state["image_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.averager is not None:
            self.averager.load_state_dict(state["averager"])
        self.loss_sum, self.loss_count = state["loss_window"]
        self.step = int(state["step"])
        self.pending_rng = state["rng"]
        logger.info("resuming %s from step %d", self.run.root, self.step)
        return self.step

    # --- the loop ---------------------------------------------------------------

    def train(
        self, groups: list[list[ImageSample]], start_step: int, on_step: StepCallback | None
    ) -> FitResult:
        metrics = self.open_outputs(start_step)
        loader = self.batches(groups, start_step)
        if self.pending_rng is not None:
            restore_rng_state(self.pending_rng)  # last, so building the loop draws nothing
        self.model.train()
        bar = tqdm(
            total=self.config.steps,
            initial=start_step,
            desc="train",
            disable=None if self.context.is_main else True,
        )
        for images, labels in loader:
            self.step += 1
            lr = self.scheduler.get_last_lr()[0]
            loss = self.train_step(images.to(self.device), labels.to(self.device))
            if self.averager is not None:
                self.averager.update(self.encoder, self.step)
            self.after_step(loss, lr, metrics, bar)
            if on_step is not None:
                on_step(self.step, self.model)
        bar.close()
        return self.finish(metrics)

    def open_outputs(self, start_step: int) -> MetricsLog | None:
        if not self.context.is_main:
            return None
        self.run.root.mkdir(parents=True, exist_ok=True)
        save_model_description(
            self.run, self.model.spec, self.classnames, list(self.config.templates)
        )
        if not self.run.config.is_file():
            write_yaml_atomic(self.run.config, {"train": self.config.to_dict()})
        logger.info(
            "training %s for %d steps (%s loss, %s averaging) in %s",
            self.model.spec,
            self.config.steps,
            self.config.loss,
            self.config.averaging,
            self.run.root,
        )
        return MetricsLog(self.run.metrics, self.run.tensorboard, start_step)

    def batches(self, groups: list[list[ImageSample]], start_step: int) -> DataLoader:
        sampler = BalancedBatchSampler(
            [len(group) for group in groups],
            self.config.batch_size,
            self.config.seed,
            self.config.steps,
            start_step,
            self.context,
        )
        samples = [sample for group in groups for sample in group]
        # A private generator keeps the loader from drawing on the global torch RNG,
        # whose state the checkpoint restores.
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, start_step))
        return DataLoader(
            SeededImageDataset(samples, self.model.train_transform),
            batch_sampler=sampler,
            num_workers=self.config.num_workers,
            generator=generator,
            pin_memory=torch.device(self.device).type == "cuda",
        )

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(self.config.precision, self.device):
            features = self.forward_encoder(images)
        embeddings = F.normalize(features.float(), dim=-1)
        loss = self.criterion(embeddings, self.text, labels, self.model.logit_scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at step {self.step}: the loss is {float(loss)}; "
                f"lower --lr (now {self.config.lr}) or use --precision fp32"
            )
        self.scaler.scale(loss).backward()
        if self.config.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss.detach()

    def after_step(
        self, loss: torch.Tensor, lr: float, metrics: MetricsLog | None, bar: tqdm
    ) -> None:
        config, step = self.config, self.step
        self.loss_sum += float(loss)
        self.loss_count += 1
        if step % config.log_every == 0 or step == config.steps:
            mean_loss = mean_across_ranks(
                self.loss_sum / self.loss_count, self.context, self.device
            )
            self.loss_sum, self.loss_count = 0.0, 0
            if metrics is not None:
                metrics.log({"step": step, "split": "train", "loss": mean_loss, "lr": lr})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        if self.val_samples and (
            (config.eval_every and step % config.eval_every == 0) or step == config.steps
        ):
            self.validate(metrics)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            self.save_checkpoint()
        bar.update(1)

    # --- validation -------------------------------------------------------------

    def validate(self, metrics: MetricsLog | None) -> None:
        """Log validation accuracy of the live and the averaged weights (rank 0 only)."""
        if self.context.is_main:
            record = {"step": self.step, "split": "val"}
            record.update(self.accuracy("accuracy"))
            if self.averager is not None:
                live = [p.detach().clone() for p in self.encoder.parameters()]
                self.averager.copy_to(self.encoder)
                record.update(self.accuracy("averaged_accuracy"))
                with torch.no_grad():
                    for param, value in zip(self.encoder.parameters(), live, strict=True):
                        param.copy_(value)
            metrics.log(record)
            self.model.train()
        barrier(self.context)

    def accuracy(self, name: str) -> dict:
        result = evaluate(
            self.model,
            self.val_samples,
            self.classnames,
            self.config.templates,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            num_workers=self.config.num_workers,
            precision=self.config.precision,
        )
        return {name: result.accuracy, f"{name}_total": result.total}

    # --- outputs ----------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if self.context.is_main:
            save_training_state(self.state_dict(), self.run.checkpoint)

    def finish(self, metrics: MetricsLog | None) -> FitResult:
        final_state = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        averaged_state = None
        if self.averager is not None:
            averaged_state = self.averager.averaged_state_dict(self.encoder)
        history: list[dict] = []
        if self.context.is_main:
            save_state_atomic(final_state, self.run.weights("final"))
            if averaged_state is not None:
                save_state_atomic(averaged_state, self.run.weights("averaged"))
            self.save_checkpoint()  # last: its step marks the run as finished
            metrics.close()
            history = list(metrics.records)
            logger.info("finished %d steps; weights in %s", self.step, self.run.root / "weights")
        barrier(self.context)
        return FitResult(final_state, averaged_state, history, self.step)


# --- helpers ---------------------------------------------------------------------------


def check_same_settings(saved: TrainConfig, current: TrainConfig, path: Path) -> None:
    details = saved.describe_differences(current)
    if details:
        raise ValueError(
            f"cannot resume from {path}: the settings differ ({details}); use another "
            f"output folder or start over with --no-resume (resume=False in Python)"
        )


def check_resumable(run_dir: Path | str, config: TrainConfig) -> None:
    """Raise ValueError if ``run_dir`` contains a checkpoint whose weight-shaping settings
    differ from ``config``, so a run can be rejected before it writes to that folder."""
    saved = checkpoint_config(run_dir)
    if saved is not None:
        check_same_settings(saved, config, RunFolder(Path(run_dir)).checkpoint)


def checkpoint_config(run_dir: Path | str) -> TrainConfig | None:
    """Return the settings saved in ``run_dir``'s checkpoint, or None without one.

    ``mmap`` leaves the checkpoint's tensors on disk, so only the settings are read.
    """
    checkpoint = RunFolder(Path(run_dir)).checkpoint
    if not checkpoint.is_file():
        return None
    return TrainConfig.from_dict(load_training_state(checkpoint, mmap=True)["config"])


def load_finished_run(
    model: ImageTextModel, run: RunFolder, config: TrainConfig
) -> FitResult | None:
    """Return the saved result of a finished run in ``run``, or ``None`` if unfinished."""
    if not run.checkpoint.is_file() or not run.weights("final").is_file():
        return None
    state = load_training_state(run.checkpoint)
    check_same_settings(TrainConfig.from_dict(state["config"]), config, run.checkpoint)
    if int(state["step"]) < config.steps:
        return None
    final_state = load_state(run.weights("final"))
    averaged_state = None
    if config.averaging != "none":
        averaged_state = load_state(run.weights("averaged"))
    model.image_encoder.load_state_dict(final_state)
    return FitResult(final_state, averaged_state, read_records(run.metrics), int(state["step"]))


def clear_training_files(run: RunFolder) -> None:
    """Remove what an earlier run left, so a fresh start cannot mix with it."""
    for path in (run.checkpoint, run.metrics, run.summary, run.weights("final")):
        path.unlink(missing_ok=True)
    run.weights("averaged").unlink(missing_ok=True)
    if run.tensorboard.is_dir():
        shutil.rmtree(run.tensorboard)
