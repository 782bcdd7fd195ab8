"""The stages of indexing, as plain callables on batches (dicts of numpy arrays), so Ray Data
can run them (pipelines/index.py) and tests can call them directly.

listing (listing.py) -> DecodeVideos (CPU) -> EncodeClips (GPU when present) -> Store.upsert

One row travels per *video* until the encoder: it carries all of the video's clips (the whole
video and, for long videos, its moments), so every batch the writer sees holds whole videos and a
video is either fully written or not at all. A video that fails keeps its row, with an error and
the stage it failed at, and ends in the errors table instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .encoder import EncoderConfig, VideoEncoder
from .frames import center_crop
from .listing import Source
from .store import moment_key
from .thumbnails import thumbnail
from .video import Decoder, SamplingConfig, VideoDecodeError


@dataclass(frozen=True)
class MomentConfig:
    """Videos longer than ``min_duration`` seconds also get one row per window."""

    length: float = 10.0
    stride: float = 10.0
    min_duration: float = 20.0


def sources_batch(sources: list[Source]) -> dict[str, np.ndarray]:
    return {"uri": np.array([s.uri for s in sources], dtype=object),
            "key": np.array([s.key for s in sources], dtype=object),
            "metadata": np.array([s.metadata for s in sources], dtype=object)}


class DecodeVideos:
    """CPU stage: every video's clips (whole video, plus moments of long videos) as cropped uint8
    frames. Decoding runs in an isolated process with a timeout (video.Decoder), so a file that
    crashes or hangs the decoder costs that video only; it leaves with an error instead."""

    def __init__(self, *, sampling: SamplingConfig, moments: MomentConfig = MomentConfig(), timeout: float = 120.0):
        self.sampling = sampling
        self.moments = moments
        self.decoder = Decoder(timeout=timeout)

    def clips(self, uri: str) -> tuple[np.ndarray, list[float | None], list[float | None], list[bytes]]:
        whole = self.decoder.sample_clip(uri, self.sampling)
        clips, starts, ends = [whole.frames], [None], [None]
        if whole.info.duration >= self.moments.min_duration:
            for moment in self.decoder.sample_moments(uri, self.sampling, self.moments.length, self.moments.stride):
                clips.append(moment.frames)
                starts.append(moment.start)
                ends.append(moment.end)
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


@dataclass(frozen=True)
class EncodeSettings:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    clips_per_forward: int = 32
    threads: int | None = None  # torch CPU threads; None leaves torch's default


class EncodeClips:
    """Encoder stage: the model is loaded once per actor (fp16 on a GPU). Emits one row per clip
    (id, video_id, kind, uri, start, end, vector, model, schedule, metadata, thumbnail) plus the videos that
    failed, as rows with an error and no clip."""

    def __init__(self, *, settings: EncodeSettings):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = VideoEncoder.create(settings.encoder).eval().to(self.device)
        if self.device.type == "cuda":
            self.encoder = self.encoder.half()
        self.settings = settings
        self.model = self.encoder.model_name if self.encoder.pretrained is None else \
            f"{self.encoder.model_name}:{Path(self.encoder.pretrained).name}"

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> np.ndarray:
        vectors = []
        for begin in range(0, len(frames), self.settings.clips_per_forward):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[begin:begin + self.settings.clips_per_forward]))
            vectors.append(self.encoder.encode_video(self.encoder.preprocess(chunk.to(self.device))).float().cpu())
        return torch.cat(vectors).numpy() if vectors else np.zeros((0, self.encoder.embed_dim), np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = list(batch["error"])
        stages = ["decode" if error else "" for error in errors]
        good = [i for i, error in enumerate(errors) if not error]
        vectors = np.zeros((0, self.encoder.embed_dim), np.float32)
        if good:
            try:
                vectors = self.embed(np.concatenate([batch["frames"][i] for i in good]))
            except (RuntimeError, ValueError) as failure:  # e.g. out of memory: these videos fail, the job goes on
                for i in good:
                    errors[i], stages[i] = f"cannot encode: {failure}", "encode"
                good, vectors = [], vectors[:0]
        rows: dict[str, list] = {name: [] for name in ("id", "video_id", "kind", "uri", "start", "end", "metadata", "thumbnail",
                                                       "error", "stage")}

        def add(**values: Any) -> None:
            for name, value in values.items():
                rows[name].append(value)

        for i in good:
            key = batch["key"][i]
            for start, end, jpeg in zip(json.loads(batch["starts"][i]), json.loads(batch["ends"][i]), batch["thumbnails"][i]):
                add(id=key if start is None else moment_key(key, start, end), video_id=key,
                    kind="video" if start is None else "moment", uri=batch["uri"][i], start=start, end=end,
                    metadata=batch["metadata"][i], thumbnail=jpeg, error="", stage="")
        failed = [i for i, error in enumerate(errors) if error]
        for i in failed:
            add(id=batch["key"][i], video_id=batch["key"][i], kind="video", uri=batch["uri"][i], start=None, end=None,
                metadata=batch["metadata"][i], thumbnail=b"", error=errors[i], stage=stages[i])
        count = len(rows["id"])
        return {
            **{name: np.array(values, dtype=object) for name, values in rows.items() if name not in ("start", "end")},
            # NaN stands for "whole video" here: Ray Data columns need one dtype; the writer maps it to null.
            "start": np.array([np.nan if v is None else v for v in rows["start"]], dtype=np.float64),
            "end": np.array([np.nan if v is None else v for v in rows["end"]], dtype=np.float64),
            "vector": np.concatenate([vectors, np.zeros((len(failed), vectors.shape[1]), np.float32)]).reshape(count, -1),
            "model": np.array([self.model] * count, dtype=object),
            "schedule": np.array([str(self.encoder.schedule)] * count, dtype=object),
        }
