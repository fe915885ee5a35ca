"""Overlay PNGs a person can look at: class masks in colour over the image, with a legend of
class names below it.

Images are original-frame slices ``(H, W)`` or ``(H, W, 3)`` uint8 (CT windowed as the model saw
it); label maps ``(H, W)`` class ids. Small slices are enlarged by an integer factor (image
bilinear, labels nearest) so the shorter side is at least ``min_side`` pixels and the legend is
legible. Class ``c`` is drawn in ``PALETTE[(c - 1) % len(PALETTE)]`` everywhere in the project.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
                    [250, 190, 212], [0, 128, 128], [170, 110, 40]], np.uint8)


def class_colour(class_id: int) -> tuple[int, int, int]:
    """RGB colour of class ``class_id`` (≥ 1)."""
    return tuple(int(v) for v in PALETTE[(class_id - 1) % len(PALETTE)])


def to_display(image: np.ndarray) -> np.ndarray:
    """Any ``(H, W)``/``(H, W, 3)`` image → uint8 RGB ``(H, W, 3)`` (non-uint8 min-max scaled)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        x = image.astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        image = np.round((x - lo) / max(hi - lo, 1e-8) * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def render_overlay(image: np.ndarray, labels: np.ndarray, legend: Mapping[int, str],
                   alpha: float = 0.5, min_side: int = 256) -> Image.Image:
    """The image with every labelled pixel blended (``alpha``) with its class colour, and a
    legend listing ``legend`` (class id → name) in colour below it."""
    rgb, labels = to_display(image), np.asarray(labels)
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {labels.shape} differ in size")
    scale = max(1, -(-min_side // min(labels.shape)))
    h, w = labels.shape[0] * scale, labels.shape[1] * scale
    rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((w, h),
                                                                         Image.Resampling.NEAREST))
    colours = np.concatenate([[[0, 0, 0]], PALETTE[(np.arange(labels.max()) % len(PALETTE))]])
    blended = np.where(labels[..., None] > 0, (1 - alpha) * rgb + alpha * colours[labels], rgb)

    font = ImageFont.load_default()
    row = 16
    canvas = Image.new("RGB", (w, h + row * len(legend) + 6), (0, 0, 0))
    canvas.paste(Image.fromarray(np.round(blended).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (class_id, name) in enumerate(sorted(legend.items())):
        y = h + 3 + i * row
        draw.rectangle([4, y + 2, 15, y + 13], fill=class_colour(class_id))
        draw.text((20, y), f"{class_id} {name}", fill=(255, 255, 255), font=font)
    return canvas
