"""Fine-tuning methods by name: presets of loss, weight averaging and interpolation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A named training recipe.

    ``loss`` and ``averaging`` fill the matching ``TrainConfig`` fields; ``train=False``
    evaluates the pretrained model as is. ``interpolation`` set to ``alpha`` replaces the
    averaged weights by ``(1 - alpha) * pretrained + alpha * fine-tuned`` (WiSE-FT).
    """

    name: str
    help: str
    loss: str = "ce"
    averaging: str = "none"
    train: bool = True
    interpolation: float | None = None


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("zeroshot", "the pretrained model without training", train=False),
        Method("erm", "plain fine-tuning: cross-entropy, no weight averaging"),
        Method("clipood", "CLIPood: margin metric softmax and Beta moving average", "mms", "bma"),
        Method("mms", "margin metric softmax alone, no weight averaging", "mms", "none"),
        Method("erm-bma", "cross-entropy with the Beta moving average", "ce", "bma"),
        Method("erm-ema", "cross-entropy with an exponential moving average", "ce", "ema"),
        Method(
            "wise-ft",
            "cross-entropy, then the midpoint between pretrained and fine-tuned weights",
            interpolation=0.5,
        ),
    )
}


def get_method(name: str) -> Method:
    """Return the method called ``name``; ValueError lists the known names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def methods_help() -> str:
    """One line per method, for command-line help."""
    return "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
