"""Balanced, seeded, resumable batches drawn from several training groups.

Every step takes ``batch_size`` samples from each group (one group per source domain).
Each group is read in epochs: a fresh random permutation per epoch, drawn from a
``torch.Generator`` seeded by ``(seed, group, epoch)``, and a batch that crosses the end
of an epoch continues in the next one. Because the batch of step ``s`` is a pure
function of ``(seed, s)``, resuming needs only the step number, and prefetching
``DataLoader`` workers cannot put the sampler out of step with the optimiser.

Random augmentations are made reproducible the same way: each drawn sample carries its
own seed, and the dataset seeds torch and Python ``random`` with it (inside a forked
generator state) before applying the transform.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from clipood.data.samples import ImageDataset, ImageSample, load_rgb
from clipood.engine.distributed import DistributedContext, shard


def derive_seed(*values: int) -> int:
    """Mix integers into one 63-bit seed (NumPy ``SeedSequence`` hashing)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def check_batch_size(
    batch_size: int, groups: Sequence[Sequence[ImageSample]], world_size: int = 1
) -> None:
    """Raise ValueError for a batch that the training groups cannot fill.

    ``batch_size`` is drawn from every group at each step, so it may not exceed the
    number of images in the smallest group. A larger batch would repeat images within
    one step and can exhaust memory. With several processes it must also divide evenly
    between them.
    """
    if not groups or any(len(group) == 0 for group in groups):
        sizes = [len(group) for group in groups]
        raise ValueError(f"every training group needs samples; group sizes are {sizes}")
    smallest = min(range(len(groups)), key=lambda index: len(groups[index]))
    size = len(groups[smallest])
    if batch_size > size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {size} training images of "
            f"{_group_name(groups, smallest)}, the smallest training group; each step draws "
            f"batch_size images from every group, so set it to {size} or lower "
            f"(clipood train --batch-size {size}, or --set batch_size={size} for a grid)"
        )
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {world_size} processes; each "
            f"process takes an equal share of every group's batch"
        )


def _group_name(groups: Sequence[Sequence[ImageSample]], index: int) -> str:
    """Name a training group by its domain, or by its position when it has none."""
    domains = {sample.domain for sample in groups[index]}
    if len(domains) == 1 and "" not in domains:
        return f"source domain {domains.pop()!r}"
    if len(groups) == 1:
        return "the training set"
    return f"training group {index + 1} of {len(groups)}"


class BalancedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yield, for steps ``start_step..total_steps-1``, this rank's ``(index, sample_seed)``
    pairs, indexing the concatenation of the groups in order.

    With several ranks the batch of each group is split between them, so the global
    batch is ``batch_size`` per group per step whatever the number of processes.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        batch_size: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        context: DistributedContext | None = None,
    ):
        if any(size == 0 for size in group_sizes):
            raise ValueError(f"every training group needs samples; sizes are {list(group_sizes)}")
        self.group_sizes = list(group_sizes)
        self.offsets = np.cumsum([0] + self.group_sizes[:-1]).tolist()
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step
        self.context = context or DistributedContext()
        self._permutations: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def batch(self, step: int) -> list[tuple[int, int]]:
        pairs = []
        for group in range(len(self.group_sizes)):
            positions = range(step * self.batch_size, (step + 1) * self.batch_size)
            drawn = [
                (self._index(group, p), derive_seed(self.seed, step, group, p)) for p in positions
            ]
            pairs.extend(shard(drawn, self.context))
        return pairs

    def _index(self, group: int, position: int) -> int:
        size = self.group_sizes[group]
        epoch, within = divmod(position, size)
        return self.offsets[group] + self._permutation(group, epoch)[within]

    def _permutation(self, group: int, epoch: int) -> list[int]:
        key = (group, epoch)
        if key not in self._permutations:
            # Keep only the two most recent epochs per group: batches move forward.
            for old in [k for k in self._permutations if k[0] == group and k[1] < epoch - 1]:
                del self._permutations[old]
            generator = torch.Generator().manual_seed(derive_seed(self.seed, group, epoch))
            order = torch.randperm(self.group_sizes[group], generator=generator)
            self._permutations[key] = order.tolist()
        return self._permutations[key]


class SeededImageDataset(ImageDataset):
    """Read ``(index, sample_seed)`` requests as ``(image_tensor, label)``, seeding the
    random augmentations of each sample with its own seed."""

    def __getitem__(self, request: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = request
        sample = self.samples[index]
        image = load_rgb(sample.path)
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                tensor = self.transform(image)
            finally:
                random.setstate(python_state)
        return tensor, sample.label
