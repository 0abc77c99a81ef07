"""Encoded images (JPEG/PNG bytes) → `pixel_values` FP32 [N, 3, H, W], exactly as the manifest says."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from export.manifest import Preprocessing

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}
MAX_PIXELS = 50_000_000  # a decompression bomb is a bad request, not an out-of-memory


class ImageError(ValueError):
    """An image that cannot be decoded; the message says which one and why."""


def decode(data: bytes, index: int = 0) -> Image.Image:
    """RGB image from encoded bytes (grayscale repeats its channel)."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(f"image {index} is {image.width}x{image.height}: more than {MAX_PIXELS} pixels.")
        return image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"image {index} ({len(data)} bytes) is not in a format Pillow reads (JPEG, PNG, ...).") \
            from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"image {index} ({len(data)} bytes) is not a readable JPEG/PNG/...: {error}") from None


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Shorter side → `resize_size`, then the centered `img_size` square."""
    scale = spec.resize_size / min(image.size)
    size = (max(spec.img_size, round(image.width * scale)), max(spec.img_size, round(image.height * scale)))
    image = image.resize(size, _RESAMPLE[spec.interpolation])
    left, top = (size[0] - spec.img_size) // 2, (size[1] - spec.img_size) // 2
    return image.crop((left, top, left + spec.img_size, top + spec.img_size))


def to_pixels(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """[3, H, W] float32: /255, then (x − mean) / std per channel."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def preprocess(images: list[bytes], spec: Preprocessing) -> np.ndarray:
    """`pixel_values` [N, 3, img_size, img_size] for a batch of encoded images."""
    return np.stack([to_pixels(resize_and_crop(decode(data, i), spec), spec) for i, data in enumerate(images)])
