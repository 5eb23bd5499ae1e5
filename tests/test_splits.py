"""Protocol splits: in/out per domain, base/new classes, few-shot, class filtering."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipood.data.samples import ImageSample
from clipood.data.splits import base_new_split, few_shot, filter_classes, split_in_out


def make_samples(domains=("art_painting", "sketch"), per_domain=(23, 10), classes=3):
    return [
        ImageSample(Path(f"{domain}/{i}.png"), label=i % classes, domain=domain)
        for domain, count in zip(domains, per_domain, strict=True)
        for i in range(count)
    ]


def test_split_sizes_per_domain():
    inside, outside = split_in_out(make_samples(), holdout_fraction=0.2, seed=0)
    out_counts = {d: sum(s.domain == d for s in outside) for d in ("art_painting", "sketch")}
    assert out_counts == {"art_painting": 4, "sketch": 2}  # floor(23 * 0.2), floor(10 * 0.2)
    assert len(inside) == 19 + 8


def test_split_disjoint_and_complete():
    samples = make_samples()
    inside, outside = split_in_out(samples, 0.3, seed=4)
    assert set(inside).isdisjoint(outside)
    assert set(inside) | set(outside) == set(samples)


def test_split_deterministic_per_seed():
    samples = make_samples()
    assert split_in_out(samples, 0.2, seed=1) == split_in_out(samples, 0.2, seed=1)
    assert split_in_out(samples, 0.2, seed=1)[1] != split_in_out(samples, 0.2, seed=2)[1]


def test_split_domain_independent_of_others():
    both = split_in_out(make_samples(), 0.2, seed=3)[1]
    alone = split_in_out(make_samples(("sketch",), (10,)), 0.2, seed=3)[1]
    assert [s for s in both if s.domain == "sketch"] == alone


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="1.5"):
        split_in_out(make_samples(), holdout_fraction=1.5)


@pytest.mark.parametrize(
    ("count", "base", "new"),
    [(4, [0, 1], [2, 3]), (5, [0, 1, 2], [3, 4]), (2, [0], [1]), (7, [0, 1, 2, 3], [4, 5, 6])],
)
def test_base_new_halves(count, base, new):
    assert base_new_split(count) == (base, new)


def test_base_new_rejects_one_class():
    with pytest.raises(ValueError, match="num_classes=1"):
        base_new_split(1)


def test_few_shot_counts_and_determinism():
    samples = make_samples(per_domain=(30, 30), classes=3)
    shots = few_shot(samples, shots=4, seed=0)
    assert sorted(s.label for s in shots) == [0] * 4 + [1] * 4 + [2] * 4
    assert few_shot(samples, 4, seed=0) == shots
    assert few_shot(samples, 4, seed=1) != shots


def test_few_shot_class_subset():
    shots = few_shot(make_samples(per_domain=(30, 30)), shots=2, seed=0, classes=[2])
    assert [s.label for s in shots] == [2, 2]


def test_few_shot_too_few_names_class():
    samples = make_samples(per_domain=(7, 0), classes=3)  # class 0: 3, classes 1, 2: 2
    with pytest.raises(ValueError, match="class 1 has 2 samples"):
        few_shot(samples, shots=3, seed=0)
    kept = few_shot(samples, shots=3, seed=0, allow_fewer=True)
    assert len(kept) == 7


def test_filter_classes_relabel():
    samples = make_samples(per_domain=(6, 0), classes=3)
    kept = filter_classes(samples, [2, 0], relabel=True)
    assert [s.label for s in kept] == [1, 0, 1, 0]
    same = filter_classes(samples, [2, 0], relabel=False)
    assert [s.label for s in same] == [0, 2, 0, 2]
