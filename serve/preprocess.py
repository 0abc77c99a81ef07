"""Encoded images → `pixel_values` FP32 [N, 3, H, W], exactly as the manifest says, within pixel bounds.

Only the formats the README lists are opened (JPEG, PNG, WebP, BMP, TIFF, GIF's first frame): Pillow can read
many more, some through external programs (EPS → Ghostscript), and none of them is needed to classify photos.
An image is refused when its decoded size or the size the resize step would make of it exceeds `max_pixels`:
the header alone is not enough, since a 1×10⁶ strip scaled to a 32-pixel shorter side is 32×32·10⁶ pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from contract.images import to_rgb
from export.manifest import Preprocessing

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


class ImageError(ValueError):
    """An image that cannot or may not be decoded; the message says which one and why."""


def resize_plan(width: int, height: int, spec: Preprocessing) -> tuple[int, int]:
    """Size after scaling the shorter side to `resize_size` (never below the crop)."""
    scale = spec.resize_size / min(width, height)
    return max(spec.img_size, round(width * scale)), max(spec.img_size, round(height * scale))


def open_checked(data: bytes, index: int, spec: Preprocessing, max_pixels: int) -> Image.Image:
    """The image, header read and bounds checked, not yet decoded."""
    try:
        with warnings.catch_warnings():  # our own bound below is tighter than Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"image {index} ({len(data)} bytes) is not a {'/'.join(FORMATS)} image.") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image {index} declares more pixels than Pillow's decompression-bomb limit.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # a header that lies or ends early
        raise ImageError(f"image {index} ({len(data)} bytes) has an unreadable header: {error}") from None
    if not image.width or not image.height:
        raise ImageError(f"image {index} has no pixels ({image.width}x{image.height}).")
    for what, (w, h) in (("is", image.size), ("would be resized to", resize_plan(*image.size, spec))):
        if w * h > max_pixels:
            raise ImageError(f"image {index} {what} {w}x{h} pixels: more than the server's limit of {max_pixels} "
                             "(--max-image-pixels); send a smaller image or one closer to square.")
    return image


def decode(data: bytes, index: int, spec: Preprocessing, max_pixels: int) -> Image.Image:
    """The RGB image training would have read from the same file (`contract.images.to_rgb`: EXIF orientation,
    16-bit scaled, alpha on white; grayscale repeats its channel; GIF: the first frame)."""
    image = open_checked(data, index, spec, max_pixels)
    try:
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt data
        raise ImageError(f"image {index} ({len(data)} bytes) is not a readable {image.format} image: {error}") \
            from None


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Shorter side → `resize_size`, then the centered `img_size` square."""
    size = resize_plan(image.width, image.height, spec)
    image = image.resize(size, _RESAMPLE[spec.interpolation])
    left, top = (size[0] - spec.img_size) // 2, (size[1] - spec.img_size) // 2
    return image.crop((left, top, left + spec.img_size, top + spec.img_size))


def to_pixels(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """[3, H, W] float32: /255, then (x − mean) / std per channel."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def preprocess(images: list[bytes], spec: Preprocessing, max_pixels: int) -> np.ndarray:
    """`pixel_values` [N, 3, img_size, img_size] for a batch of encoded images."""
    out = np.empty((len(images), 3, spec.img_size, spec.img_size), np.float32)
    for i, data in enumerate(images):
        out[i] = to_pixels(resize_and_crop(decode(data, i, spec, max_pixels), spec), spec)
    return out
