"""Pixel geometry and the model's input transform, shared by decoding (centerclip.media.decoding, the
decoding processes) and encoding (centerclip.model.encoder): no decoder library is imported here, so an
encoding process does not load decord and PyAV, and torch is imported only by ``preprocess``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def decode_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shortest side ``size``, rounded as torchvision's Resize(size) does,
    so that ``preprocess`` finds frames already at its target size and only crops them."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """[..., H, W, 3] frames whose shortest side is ``size`` -> [..., size, size, 3]."""
    height, width = frames.shape[-3:-1]
    top, left = round((height - size) / 2), round((width - size) / 2)
    return frames[..., top:top + size, left:left + size, :]


def model_preprocessing(model: torch.nn.Module) -> dict[str, Any]:
    """``size``, ``mean`` and ``std`` of an open_clip model (or its visual module), the arguments
    of ``preprocess``. Raises ValueError for transforms ``preprocess`` does not reproduce."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    if height != width or cfg.get("resize_mode", "shortest") != "shortest" \
            or cfg.get("interpolation", "bicubic") != "bicubic":
        raise ValueError(f"only square, shortest-side, bicubic transforms are supported, got {cfg}")
    return {"size": height, "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def preprocess(frames: np.ndarray | torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 frames [..., H, W, 3] or [..., 3, H, W] -> float [..., 3, size, size], as open_clip's
    ``image_transform(size, is_train=False)`` does on PIL images: resize the shortest side to
    ``size`` (bicubic, antialiased, rounded to uint8 like PIL), centre crop, scale, normalise.
    A last dimension of 3 means channels last. Runs on the frames' device."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {x.dtype}")
    if x.shape[-1] == 3:
        x = x.movedim(-1, -3)
    lead, (height, width) = x.shape[:-3], x.shape[-2:]
    x = x.reshape(-1, 3, height, width).float()
    new_width, new_height = decode_size(width, height, size)
    if (new_height, new_width) != (height, width):
        # antialias=True selects PIL's kernels (bicubic a=-0.5, widened when shrinking). PIL resizes
        # rows, then columns, rounding to uint8 in between; doing the same matches it to one level
        # on <0.1% of pixels, where a single 2-D pass is off by up to 4 levels at sharp edges.
        for target in ((height, new_width), (new_height, new_width)):
            x = F.interpolate(x, size=target, mode="bicubic", antialias=True).round_().clamp_(0, 255)
    top, left = round((new_height - size) / 2), round((new_width - size) / 2)
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1) * 255
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1) * 255
    return ((x - mean) / std).reshape(*lead, 3, size, size)
