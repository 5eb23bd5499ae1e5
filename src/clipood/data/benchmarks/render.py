"""Render callables for ``PlannedImage``: one per kind of source, each with a style name.

Styles: ``original`` (the picture itself on white), ``sketch`` (derived edge lines) and
``silhouette`` (derived: the object's mask filled black). A render that comes out nearly
blank raises ValueError, so the writer skips it and records why in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from clipood.data.benchmarks import styles
from clipood.data.benchmarks.glyphs import render_glyph
from clipood.data.benchmarks.openclipart import open_guarded

STYLES = ("original", "sketch", "silhouette")


def _apply_style(rgba: Image.Image, size: int, style: str) -> Image.Image:
    fitted = styles.fit_on_canvas(rgba, size)
    if style == "original":
        return styles.check_visible(styles.flatten(fitted))
    if style == "sketch":
        return styles.check_visible(styles.edge_sketch(fitted))
    if style == "silhouette":
        return styles.check_visible(styles.silhouette(fitted))
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def _render_file(path: Path, size: int, style: str) -> Image.Image:
    with open_guarded(path) as image:
        rgba = styles.to_rgba(image)
    return _apply_style(rgba, size, style)


def _render_grey(pixels: np.ndarray, size: int, style: str) -> Image.Image:
    if style == "original":
        return styles.check_visible(styles.from_grey_array(pixels, size))
    if style == "sketch":
        return styles.check_visible(styles.outline_of_grey_array(pixels, size))
    raise ValueError(f"style {style!r} is not defined for grey arrays")


def _render_character(font: Path, character: str, colour: bool, size: int) -> Image.Image:
    return _apply_style(render_glyph(font, character, colour), size, "original")


def file_renderer(path: Path, size: int, style: str) -> Callable[[], Image.Image]:
    return partial(_render_file, path, size, style)


def grey_renderer(pixels: np.ndarray, size: int, style: str) -> Callable[[], Image.Image]:
    return partial(_render_grey, pixels, size, style)


def glyph_renderer(font: Path, character: str, colour: bool, size: int):
    return partial(_render_character, font, character, colour, size)
