"""Sample splits of the three protocols: in/out per domain, base/new classes, few-shot.

All functions are deterministic for a given seed and return samples in their input order.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from collections.abc import Sequence

from clipood.data.samples import ImageSample


def _domain_seed(seed: int, domain: str) -> int:
    # crc32 is stable across processes, unlike hash() of a str.
    return seed * 1_000_003 + zlib.crc32(domain.encode("utf-8"))


def split_in_out(
    samples: Sequence[ImageSample], holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ImageSample], list[ImageSample]]:
    """Split each domain's samples at random into an in part and an out (held-out) part.

    Each domain holds out ``floor(n * holdout_fraction)`` of its ``n`` samples and keeps
    the other ``ceil(n * (1 - holdout_fraction))``, as DomainBed's ``split_dataset`` does
    with ``int(len(env) * holdout_fraction)``. The permutation depends on the seed and the
    domain name only, so adding a domain does not change another domain's split.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(
            f"holdout_fraction must be in [0, 1), got {holdout_fraction}; 0.2 is DomainBed's"
        )
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        by_domain[sample.domain].append(i)

    held_out: set[int] = set()
    for domain, indices in by_domain.items():
        shuffled = list(indices)
        random.Random(_domain_seed(seed, domain)).shuffle(shuffled)
        held_out.update(shuffled[: int(len(indices) * holdout_fraction)])

    inside = [s for i, s in enumerate(samples) if i not in held_out]
    outside = [s for i, s in enumerate(samples) if i in held_out]
    return inside, outside


def base_new_split(num_classes: int) -> tuple[list[int], list[int]]:
    """Split class indices into base (first half) and new (second half).

    For an odd count the base half gets the extra class (``ceil(n / 2)`` base classes),
    as CoOp's ``subsample_classes`` does.
    """
    if num_classes < 2:
        raise ValueError(
            f"a base/new split needs at least 2 classes, got num_classes={num_classes}"
        )
    middle = math.ceil(num_classes / 2)
    return list(range(middle)), list(range(middle, num_classes))


def filter_classes(
    samples: Sequence[ImageSample], classes: Sequence[int], relabel: bool
) -> list[ImageSample]:
    """Keep the samples whose label is in ``classes``.

    With ``relabel`` the labels become positions in ``classes`` (0..len-1), which is what a
    classifier over only those classes expects.
    """
    position = {label: i for i, label in enumerate(classes)}
    kept = [s for s in samples if s.label in position]
    if not relabel:
        return kept
    return [ImageSample(path=s.path, label=position[s.label], domain=s.domain) for s in kept]


def few_shot(
    samples: Sequence[ImageSample],
    shots: int,
    seed: int,
    classes: Sequence[int] | None = None,
    allow_fewer: bool = False,
) -> list[ImageSample]:
    """Draw ``shots`` samples per class at random (all domains pooled).

    ``classes`` restricts the draw (default: every label present). A class with fewer
    than ``shots`` samples raises ``ValueError`` unless ``allow_fewer`` is set, in which
    case all of its samples are kept.
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        by_label[sample.label].append(i)
    selected = sorted(by_label) if classes is None else list(classes)

    rng = random.Random(seed)
    chosen: set[int] = set()
    for label in selected:
        indices = by_label.get(label, [])
        if len(indices) < shots and not allow_fewer:
            raise ValueError(
                f"class {label} has {len(indices)} samples, fewer than shots={shots}; "
                "lower the shots or allow fewer samples for small classes"
            )
        chosen.update(rng.sample(indices, min(shots, len(indices))))
    return [s for i, s in enumerate(samples) if i in chosen]
