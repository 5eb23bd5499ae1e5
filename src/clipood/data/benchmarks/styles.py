"""Image preparation and the derived styles (edge sketch, alpha silhouette) of the builders.

Every function takes and returns Pillow images. Outputs are square RGB images of
``size`` pixels with the object centred on white, so all domains share one geometry.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

# Share of the canvas that the object's longer side fills.
OBJECT_FILL = 0.85
# A pixel is ink when one of its channels is this far below white (so light yellow
# counts but a faint grey does not). A rendered image needs MIN_INK_FRACTION of ink:
# openclipart's generated star polygons, drawn with thin translucent lines, flatten to
# near-white and are rejected.
INK_DISTANCE = 48
MIN_INK_FRACTION = 0.003


def to_rgba(image: Image.Image) -> Image.Image:
    """Convert to RGBA; an image without transparency gets an opaque alpha channel."""
    if image.mode == "RGBA":
        return image
    if image.mode in ("LA", "P", "PA") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB").convert("RGBA")


def _crop_to_content(rgba: Image.Image) -> Image.Image:
    # Content is where alpha is set and the pixel is not plain white.
    alpha = rgba.getchannel("A").point(lambda v: 255 if v > 16 else 0)
    ink = ImageOps.invert(rgba.convert("L")).point(lambda v: 255 if v > 8 else 0)
    box = ImageChops.multiply(alpha, ink).getbbox()
    return rgba.crop(box) if box else rgba


def fit_on_canvas(rgba: Image.Image, size: int, alpha_power: int = 1) -> Image.Image:
    """Crop to the object, scale it to ``OBJECT_FILL`` of the canvas and centre it.

    ``alpha_power`` raises the resized alpha (as a fraction) to that power, which
    steepens soft edges: 28 px grey arrays upscaled about five times would otherwise
    have blurred outlines and broken edge sketches. Returns RGBA on a transparent canvas
    so callers can derive masks before flattening.
    """
    content = _crop_to_content(rgba)
    scale = OBJECT_FILL * size / max(content.size)
    new_size = (max(1, round(content.width * scale)), max(1, round(content.height * scale)))
    resized = content.resize(new_size, Image.Resampling.LANCZOS)
    if alpha_power != 1:
        alpha = np.asarray(resized.getchannel("A"), dtype=np.float64) / 255.0
        resized.putalpha(Image.fromarray(np.round(255.0 * alpha**alpha_power).astype(np.uint8)))
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    offset = ((size - new_size[0]) // 2, (size - new_size[1]) // 2)
    canvas.alpha_composite(resized, offset)
    return canvas


def flatten(rgba: Image.Image) -> Image.Image:
    """Composite onto white and return RGB."""
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def object_mask(rgba: Image.Image) -> Image.Image:
    """Return the object as an L mask (255 = object).

    Uses the alpha channel where the image has transparency, and otherwise every pixel
    that is not near-white.
    """
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() < 250:
        return Image.fromarray(np.where(alpha > 127, 255, 0).astype(np.uint8))
    grey = np.asarray(rgba.convert("L"))
    return Image.fromarray(np.where(grey < 240, 255, 0).astype(np.uint8))


def silhouette(rgba: Image.Image) -> Image.Image:
    """Derived style: the object filled black on white, from its mask."""
    mask = object_mask(rgba)
    return ImageOps.invert(mask).convert("RGB")


def edge_sketch(rgba: Image.Image) -> Image.Image:
    """Derived style: dark edge lines on white, from the flattened image's luminance edges."""
    grey = flatten(rgba).convert("L").filter(ImageFilter.GaussianBlur(0.8))
    edges = ImageOps.autocontrast(grey.filter(ImageFilter.FIND_EDGES))
    lines = edges.point(lambda v: 0 if v > 40 else 255)
    # FIND_EDGES marks the canvas border as an edge; blank a 2-pixel frame.
    inner = lines.crop((2, 2, lines.width - 2, lines.height - 2))
    return ImageOps.expand(inner, border=2, fill=255).convert("RGB")


def from_grey_array(pixels: np.ndarray, size: int) -> Image.Image:
    """Turn a light-on-dark grey array (MNIST style) into a dark-on-white centred image."""
    grey = Image.fromarray(255 - pixels.astype(np.uint8), mode="L")
    rgba = grey.convert("RGBA")
    rgba.putalpha(Image.fromarray(pixels.astype(np.uint8), mode="L"))
    return flatten(fit_on_canvas(rgba, size, alpha_power=3))


def outline_of_grey_array(pixels: np.ndarray, size: int) -> Image.Image:
    """Derived style: the edge sketch of an MNIST-style grey array."""
    grey = Image.fromarray(255 - pixels.astype(np.uint8), mode="L")
    rgba = grey.convert("RGBA")
    rgba.putalpha(Image.fromarray(pixels.astype(np.uint8), mode="L"))
    return edge_sketch(fit_on_canvas(rgba, size, alpha_power=3))


def ink_fraction(image: Image.Image) -> float:
    """Return the share of pixels with a channel more than ``INK_DISTANCE`` below white."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float(((255 - pixels.min(axis=2)) > INK_DISTANCE).mean())


def check_visible(image: Image.Image) -> Image.Image:
    """Return ``image``; raise ValueError when it is nearly blank (white)."""
    fraction = ink_fraction(image)
    if fraction < MIN_INK_FRACTION:
        raise ValueError(
            f"nearly blank: {fraction:.2%} of pixels differ from white, "
            f"below the minimum of {MIN_INK_FRACTION:.1%}"
        )
    return image
