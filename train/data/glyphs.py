"""Rendered glyph images (letters and symbols, never digits) for pretraining the embedded backbone.

The fonts are the TrueType files matplotlib ships, so the data exists on any machine with the
project installed and is disjoint from the Split-Digits benchmark by construction.
"""

from __future__ import annotations

import string
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPHS = string.ascii_letters + "#$%&@?!+*=<>/\\"
_TEXT_FONT_PREFIXES = ("DejaVu", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmti10", "cmb10")


def font_files() -> list[Path]:
    """Text fonts shipped with matplotlib (symbol-only fonts are left out)."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("*.ttf") if p.name.startswith(_TEXT_FONT_PREFIXES))


def render_glyph(char: str, font: Path, rng: np.random.Generator, size: int) -> np.ndarray:
    """One glyph, white on black like the digits, at a random size, shift and rotation, in [0, 1]."""
    canvas = 2 * size
    face = ImageFont.truetype(str(font), int(rng.integers(size * 7 // 8, size * 11 // 8 + 1)))
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), char, fill=255, font=face, anchor="mm")
    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    shift = size // 8
    left = canvas // 4 + int(rng.integers(-shift, shift + 1))
    top = canvas // 4 + int(rng.integers(-shift, shift + 1))
    image = image.crop((left, top, left + size, top + size))
    if rng.random() < 0.5:  # blur through 8x8 like the digits' native resolution
        image = image.resize((8, 8), Image.BILINEAR).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def render_glyph_dataset(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` glyph images `(N, size, size)` in [0, 1] and their class ids into `GLYPHS`."""
    rng = np.random.default_rng(seed)
    fonts = font_files()
    labels = rng.integers(0, len(GLYPHS), count)
    font_ids = rng.integers(0, len(fonts), count)
    images = np.stack([render_glyph(GLYPHS[c], fonts[f], rng, size) for c, f in zip(labels, font_ids)])
    visible = images.reshape(count, -1).max(axis=1) > 0.2  # a font may lack a glyph
    return images[visible], labels[visible]
