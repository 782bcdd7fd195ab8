"""Thumbnails: a small JPEG per indexed row (video or moment), made from frames already decoded for
the encoder, so indexing never decodes a file twice."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

LONG_SIDE = 224  # thumbnails are at most this many pixels on their long side
QUALITY = 80


def thumbnail(frames: np.ndarray, long_side: int = LONG_SIDE, quality: int = QUALITY) -> bytes:
    """uint8 frames [T, H, W, 3] of a clip -> a JPEG of its middle frame, scaled down (never up)
    to ``long_side`` pixels on its long side, aspect ratio kept."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    image = Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2]))
    image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return _jpeg(image, quality)


@functools.cache
def placeholder() -> bytes:
    """The image shown for rows indexed before thumbnails existed: a plain grey 16:9 frame."""
    return _jpeg(Image.new("RGB", (LONG_SIDE, LONG_SIDE * 9 // 16), (72, 76, 84)), QUALITY)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
