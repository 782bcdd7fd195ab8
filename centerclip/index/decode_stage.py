"""The decoding stage of indexing (see ``engine.py``): videos in, every video's clips
out as cropped uint8 frames, with a JPEG thumbnail per clip. It imports neither torch nor LanceDB, so a decoding process (a Ray
actor, plus its isolated decode worker and that worker's fork server) stays near 100 MB instead
of carrying a deep-learning runtime it never uses."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from ..media.decoding import Decoder, SamplingConfig, VideoDecodeError, center_crop, sample_video
from ..media.sources import local_file
from ..media.thumbnails import thumbnail
from .batching import this_node
from .listing import version_now
from .job import MomentConfig


# One video, decoded: (its row in the call's batch, frames, starts, ends, thumbnails, error).
Decoded = tuple[int, np.ndarray, list, list, list[bytes], str]


class DecodeVideos:
    """CPU stage: every video's clips (whole video, plus moments of long videos, all from one
    decoding pass) as cropped uint8 frames. Decoding runs in an isolated process with a timeout
    (video.Decoder), so a file that crashes or hangs the decoder costs that video only; it leaves
    with an error instead."""

    def __init__(self, *, sampling: SamplingConfig, moments: MomentConfig = MomentConfig(), timeout: float = 120.0,
                 block_bytes: int = 128 << 20):
        self.sampling = sampling
        self.moments = moments
        self.block_bytes = block_bytes  # Ray Data's target block size (DataContext.target_max_block_size)
        self.decoder = Decoder(timeout=timeout)
        self.node = this_node()

    def clips(self, uri: str) -> tuple[np.ndarray, list[float | None], list[float | None], list[bytes]]:
        # Remote files are copied here, so a killed worker leaves no temporary file behind.
        with local_file(uri, None, self.sampling.limits.max_bytes) as local:
            return self.decoder.call(uri, index_clips, local, self.sampling, self.moments)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The batch's videos, decoded, in parts of at least ``block_bytes`` of frames (the last part
        may be less), each video whole in one part: Ray Data ships each part as it comes, so a call
        holds about one block of frames at a time however long its videos are."""
        empty = np.zeros((0, self.sampling.frames, self.sampling.size, self.sampling.size, 3), np.uint8)
        part: list[Decoded] = []
        size = 0
        for row, uri in enumerate(batch["uri"]):
            try:
                part.append((row, *self.clips(uri), ""))
                changed = _changed(uri, int(batch["size"][row]), int(batch["mtime_ns"][row]),
                                   str(batch["tag"][row])) if "size" in batch else ""
                if changed:  # what was decoded may not be the version the key names: try it next run
                    part[-1] = (row, empty, [], [], [], changed)
            except VideoDecodeError as failure:
                part.append((row, empty, [], [], [], failure.reason))
            size += part[-1][1].nbytes
            if size >= self.block_bytes:
                yield _part(batch, part, self.node)
                part, size = [], 0
        if part:
            yield _part(batch, part, self.node)


def _changed(uri: str, size: int, mtime_ns: int, tag: str = "") -> str:
    """Why the file behind ``uri`` is no longer the listed version (size, modification time and an
    object's version tag), or "" when it is (or the listing did not know them)."""
    if size < 0:
        return ""
    now = version_now(uri)
    if now is None:
        return "changed while indexing: gone or unreadable after decoding; tried again on the next run"
    if now != (size, mtime_ns, tag):
        what = f"listed at {size} bytes, {now[0]} after decoding" if now[0] != size else "rewritten after it was listed"
        return f"changed while indexing: {what}; tried again on the next run"
    return ""


def index_clips(path: str, sampling: SamplingConfig, moments: MomentConfig
                ) -> tuple[np.ndarray, list[float | None], list[float | None], list[bytes]]:
    """In the decode worker: one video's clips (the whole video, then its moments, from one
    decoding pass), cropped and stacked, their windows (None: the whole video) and thumbnails.
    Cropping and thumbnails happen here, so only the cropped frames cross the pipe."""
    whole, *windows = sample_video(path, sampling, moments.length, moments.stride, moments.min_duration)
    clips = [whole.frames] + [moment.frames for moment in windows]
    # Thumbnails from the uncropped frames: the whole picture, at the decoded size.
    return (np.stack([center_crop(clip, sampling.size) for clip in clips]), [None] + [moment.start for moment in windows],
            [None] + [moment.end for moment in windows], [thumbnail(clip) for clip in clips])


def _part(batch: dict[str, np.ndarray], part: list[Decoded], node: str) -> dict[str, np.ndarray]:
    rows, frames, starts, ends, thumbnails, errors = zip(*part)
    return {**{name: values[list(rows)] for name, values in batch.items()}, "frames": _ragged(frames),
            "thumbnails": _ragged(thumbnails), "starts": np.array([json.dumps(s) for s in starts], dtype=object),
            "ends": np.array([json.dumps(e) for e in ends], dtype=object), "error": np.array(errors, dtype=object),
            "decoded_on": np.array([node] * len(part), dtype=object)}


def _ragged(values: list) -> np.ndarray:
    """One object per row (arrays of different shapes, lists of different lengths)."""
    column = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):  # element by element: numpy would broadcast equal-length lists
        column[row] = value
    return column
