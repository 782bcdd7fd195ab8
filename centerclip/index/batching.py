"""Batches between the stages of indexing (see engine.py): the listing's sources as the first
batch, and the encoder's rows gathered back into whole videos for the writer.

One row travels per *video* until the encoder: it carries all of the video's clips (the whole
video and, for long videos, its moments). The encoder emits a row per clip; Ray Data may cut a
call's output into blocks, so WholeVideos gathers the rows again and every batch the writer sees
holds whole videos: a video is either fully written or not at all. A video that fails keeps its
row, with an error and the stage it failed at, and ends in the errors table instead.
"""

from __future__ import annotations

import numpy as np

from .listing import Source


def this_node() -> str:
    """The Ray node this process runs on ("" outside Ray): the stages tag their rows with it, so a
    job can say which nodes decoded and encoded."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def sources_batch(sources: list[Source]) -> dict[str, np.ndarray]:
    return {"uri": np.array([s.uri for s in sources], dtype=object),
            "key": np.array([s.key for s in sources], dtype=object),
            "metadata": np.array([s.metadata for s in sources], dtype=object),
            "size": np.array([s.size for s in sources], dtype=np.int64),
            "mtime_ns": np.array([s.mtime_ns for s in sources], dtype=np.int64),
            "tag": np.array([s.tag for s in sources], dtype=object)}


class WholeVideos:
    """The encoder's rows, gathered into whole videos. Ray Data cuts a call's output into blocks of
    its block size, so the rows of one video can arrive in several batches, among other calls'
    batches: they wait here until the last one comes (each row says how many rows its video has,
    ``video_rows``). A row that arrives twice counts once."""

    def __init__(self):
        self.waiting: dict[str, np.ndarray] | None = None

    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rows of the videos that are now whole (possibly none)."""
        if self.waiting is not None:
            batch = {name: np.concatenate([self.waiting[name], values]) for name, values in batch.items()}
        _, first = np.unique(batch["id"], return_index=True)
        if len(first) < len(batch["id"]):
            batch = _take(batch, np.sort(first))
        _, video, rows = np.unique(batch["video_id"], return_inverse=True, return_counts=True)
        whole = rows[video] == batch["video_rows"]
        if whole.all():  # as nearly always: no copy
            self.waiting = None
            return batch
        self.waiting = _take(batch, ~whole)
        return _take(batch, whole)

    def left(self) -> dict[str, np.ndarray] | None:
        """Rows of videos that never became whole (none unless rows were lost)."""
        return self.waiting


def _take(batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in batch.items()}
