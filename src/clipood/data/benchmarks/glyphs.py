"""Animal pictures rendered from two fonts with Pillow.

Noto Color Emoji gives colour cartoons and Symbola gives black line drawings of the same
Unicode characters. Each font gives one picture per character, so these add only a few
images per class.
"""

from __future__ import annotations

from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

# Unicode characters per animal-mnist class.
ANIMAL_CHARACTERS: dict[str, tuple[str, ...]] = {
    "bear": ("\U0001f43b",),
    "bird": ("\U0001f426", "\U0001f424", "\U0001f427", "\U0001f985", "\U0001f986", "\U0001f989",
             "\U0001f413", "\U0001f54a", "\U0001f99c"),
    "cat": ("\U0001f431", "\U0001f408"),
    "cow": ("\U0001f42e", "\U0001f404", "\U0001f402"),
    "dog": ("\U0001f436", "\U0001f415", "\U0001f429"),
    "elephant": ("\U0001f418",),
    "giraffe": ("\U0001f992",),
    "horse": ("\U0001f434", "\U0001f40e"),
    "sheep": ("\U0001f411", "\U0001f40f"),
    "zebra": ("\U0001f993",),
}  # fmt: skip

# Noto Color Emoji is a bitmap font whose only strike is 109 px.
NOTO_STRIKE_SIZE = 109
SYMBOLA_SIZE = 160


def characters_in_font(font_path: Path, characters: tuple[str, ...]) -> list[str]:
    """Return the characters that have a glyph in the font (others would render as a box)."""
    cmap = TTFont(str(font_path), lazy=True).getBestCmap()
    return [c for c in characters if ord(c) in cmap]


def render_glyph(font_path: Path, character: str, colour: bool) -> Image.Image:
    """Render one character on a transparent RGBA canvas, cropped to its ink."""
    size = NOTO_STRIKE_SIZE if colour else SYMBOLA_SIZE
    font = ImageFont.truetype(str(font_path), size)
    canvas = Image.new("RGBA", (size * 2, size * 2), (255, 255, 255, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((size // 2, size // 2), character, font=font, embedded_color=colour,
              fill=None if colour else (0, 0, 0, 255))  # fmt: skip
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"font {font_path} rendered nothing for U+{ord(character):04X}")
    return canvas.crop(box)
