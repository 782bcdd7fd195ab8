"""The stages of indexing, as plain callables on batches (dicts of numpy arrays), so Ray Data
can run them (pipelines/index.py) and tests can call them directly.

listing (centerclip.listing) -> DecodeVideos (CPU, centerclip.decode_stage) -> EncodeClips (GPU when present,
centerclip.encode_stage) -> Store.upsert

One row travels per *video* until the encoder: it carries all of the video's clips (the whole
video and, for long videos, its moments), so every batch the writer sees holds whole videos and a
video is either fully written or not at all. A video that fails keeps its row, with an error and
the stage it failed at, and ends in the errors table instead.
"""

from __future__ import annotations

import numpy as np

from .decode_stage import DecodeVideos, MomentConfig
from .encode_stage import EncodeClips, EncodeSettings
from .listing import Source

__all__ = ["DecodeVideos", "EncodeClips", "EncodeSettings", "MomentConfig", "sources_batch"]


def sources_batch(sources: list[Source]) -> dict[str, np.ndarray]:
    return {"uri": np.array([s.uri for s in sources], dtype=object),
            "key": np.array([s.key for s in sources], dtype=object),
            "metadata": np.array([s.metadata for s in sources], dtype=object)}
