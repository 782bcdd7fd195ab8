"""The decoding stage of indexing (see ``centerclip.indexing``): videos in, every video's clips
out as cropped uint8 frames, with a JPEG thumbnail per clip. It imports neither torch nor LanceDB, so a decoding process (a Ray
actor, plus its isolated decode worker and that worker's fork server) stays near 100 MB instead
of carrying a deep-learning runtime it never uses."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .thumbnails import thumbnail
from .video import Decoder, SamplingConfig, VideoDecodeError, center_crop


@dataclass(frozen=True)
class MomentConfig:
    """Videos longer than ``min_duration`` seconds also get one row per window."""

    length: float = 10.0
    stride: float = 10.0
    min_duration: float = 20.0


class DecodeVideos:
    """CPU stage: every video's clips (whole video, plus moments of long videos, all from one
    decoding pass) as cropped uint8 frames. Decoding runs in an isolated process with a timeout
    (video.Decoder), so a file that crashes or hangs the decoder costs that video only; it leaves
    with an error instead."""

    def __init__(self, *, sampling: SamplingConfig, moments: MomentConfig = MomentConfig(), timeout: float = 120.0):
        self.sampling = sampling
        self.moments = moments
        self.decoder = Decoder(timeout=timeout)

    def clips(self, uri: str) -> tuple[np.ndarray, list[float | None], list[float | None], list[bytes]]:
        whole, *moments = self.decoder.sample_video(uri, self.sampling, self.moments.length, self.moments.stride,
                                                    self.moments.min_duration)
        starts = [None] + [moment.start for moment in moments]
        ends = [None] + [moment.end for moment in moments]
        clips = [whole.frames] + [moment.frames for moment in moments]
        # Thumbnails from the uncropped frames: the whole picture, at the decoded size.
        return center_crop(np.stack(clips), self.sampling.size), starts, ends, [thumbnail(clip) for clip in clips]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        empty = np.zeros((0, self.sampling.frames, self.sampling.size, self.sampling.size, 3), np.uint8)
        frames, starts, ends, thumbnails, errors = [], [], [], [], []
        for uri in batch["uri"]:
            try:
                clip_frames, clip_starts, clip_ends, clip_thumbnails = self.clips(uri)
                error = ""
            except VideoDecodeError as failure:
                clip_frames, clip_starts, clip_ends, clip_thumbnails, error = empty, [], [], [], failure.reason
            frames.append(clip_frames)
            thumbnails.append(clip_thumbnails)
            starts.append(json.dumps(clip_starts))
            ends.append(json.dumps(clip_ends))
            errors.append(error)
        return {**batch, "frames": _ragged(frames), "thumbnails": _ragged(thumbnails), "starts": np.array(starts, dtype=object),
                "ends": np.array(ends, dtype=object), "error": np.array(errors, dtype=object)}


def _ragged(values: list) -> np.ndarray:
    """One object per row (arrays of different shapes, lists of different lengths)."""
    column = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):  # element by element: numpy would broadcast equal-length lists
        column[row] = value
    return column
