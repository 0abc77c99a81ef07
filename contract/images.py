"""Any image Pillow opens → the RGB image a model sees: EXIF orientation applied, 16-bit scaled, alpha on white.

Torch-free on purpose (PIL and numpy only): training reads files and the server decodes uploads with this one
function, so a phone photo with an EXIF rotation or a transparent PNG is served as it was trained.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_DEEP = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16/32-bit integer and float grayscale


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: rotated/flipped as its EXIF orientation says, deep grayscale scaled to 0..255
    (a plain `convert` would clip it to white), transparent pixels composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _DEEP:
        values = np.asarray(image, dtype=np.float64)
        scale = 255 / 65535 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
