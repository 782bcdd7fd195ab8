"""A split decoded once: every video's sampled frames plus its captions, kept as one uint8 array
(memory-mapped from disk), so training, evaluation and sweeps never decode a video twice."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from .decoding import Decoder, SamplingConfig, VideoDecodeError, center_crop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameSet:
    frames: np.ndarray  # uint8 [V, T, S, S, 3], already resized and centre-cropped to the model's size
    captions: list[list[str]]
    video_ids: list[str]
    temporal: np.ndarray | None = None  # bool [V]: captions that only a temporal model can tell apart

    def __post_init__(self) -> None:
        if not (len(self.frames) == len(self.captions) == len(self.video_ids)):
            raise ValueError(f"{len(self.frames)} videos, {len(self.captions)} caption lists and "
                             f"{len(self.video_ids)} ids differ")
        if any(not captions for captions in self.captions):
            raise ValueError("every video needs at least one caption")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def caption_counts(self) -> np.ndarray:
        return np.array([len(captions) for captions in self.captions])

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 [B, T, S, S, 3] frames of the given videos."""
        return torch.from_numpy(np.ascontiguousarray(self.frames[np.asarray(indices)]))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "frames.npy", self.frames)
        index = {"captions": self.captions, "video_ids": self.video_ids,
                 "temporal": None if self.temporal is None else self.temporal.tolist()}
        (folder / "index.json").write_text(json.dumps(index))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FrameSet:
        folder = Path(folder)
        index = json.loads((folder / "index.json").read_text())
        temporal = None if index["temporal"] is None else np.array(index["temporal"], dtype=bool)
        return cls(np.load(folder / "frames.npy", mmap_mode="r"), index["captions"], index["video_ids"], temporal)


def decode_split(table: pa.Table, sampling: SamplingConfig, *, workers: int = 2) -> tuple[FrameSet, list[dict]]:
    """Decode every row of a benchmark table (datasets.SCHEMA) into a FrameSet, each video in an
    isolated decoder process. Videos that fail are returned as (video_id, path, reason) records,
    never silently dropped; the FrameSet holds the rest."""
    rows = table.to_pylist()
    local = threading.local()
    decoders: list[Decoder] = []

    def decode(row: dict) -> np.ndarray | VideoDecodeError:
        if not hasattr(local, "decoder"):
            local.decoder = Decoder()
            decoders.append(local.decoder)
        try:
            return center_crop(local.decoder.sample_clip(row["video_path"], sampling, row["start"], row["end"]).frames,
                               sampling.size)
        except VideoDecodeError as error:
            return error

    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(decode, rows), total=len(rows), desc="decoding", unit="video",
                                disable=len(rows) < 50))
    finally:
        for decoder in decoders:
            decoder.close()
    good = [i for i, result in enumerate(results) if isinstance(result, np.ndarray)]
    failures = [{"video_id": row["video_id"], "path": row["video_path"], "reason": result.reason}
                for row, result in zip(rows, results) if isinstance(result, VideoDecodeError)]
    temporal = [rows[i]["temporal"] for i in good]
    frames = FrameSet(
        np.stack([results[i] for i in good]) if good else np.zeros((0, sampling.frames, sampling.size, sampling.size, 3), np.uint8),
        [rows[i]["captions"] for i in good], [rows[i]["video_id"] for i in good],
        None if any(flag is None for flag in temporal) else np.array(temporal, dtype=bool),
    )
    return frames, failures


def cached_split(table: pa.Table, sampling: SamplingConfig, cache: str | Path) -> FrameSet:
    """``decode_split`` once per (videos, windows, sampling): later calls load the saved arrays.
    Failures are logged with their reasons and listed in the cache's failures.json."""
    key = hashlib.sha256(json.dumps([table.select(["video_path", "start", "end"]).to_pylist(),
                                     dataclasses.asdict(sampling)], sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache) / key
    if (folder / "index.json").is_file():
        return FrameSet.load(folder)
    frames, failures = decode_split(table, sampling)
    if failures and not len(frames):
        raise ValueError(f"none of the {len(failures)} videos could be decoded; the first: "
                         f"{failures[0]['path']}: {failures[0]['reason']}")
    for failure in failures:
        log.warning("skipped %s (%s): %s", failure["video_id"], failure["path"], failure["reason"])
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    frames.save(staging)
    (staging / "failures.json").write_text(json.dumps(failures, indent=2))
    if folder.exists():  # another process decoded the same split meanwhile
        shutil.rmtree(staging)
    else:
        os.replace(staging, folder)
    return FrameSet.load(folder)


def benchmark_split(dataset: str, root: str | None, split: str, sampling: SamplingConfig, cache: str | Path,
                    synthetic_videos: int = 2000) -> FrameSet:
    """A benchmark split decoded once (cached under ``cache``). The synthetic benchmark is
    generated under ``cache`` when no root is given; videos missing on disk are counted in a
    warning and left out, never silently."""
    from ..datasets import load
    from ..datasets.synthetic import ensure_synthetic

    if dataset == "synthetic" and root is None:
        root = str(ensure_synthetic(Path(cache) / "synthetic", synthetic_videos))
    if root is None:
        raise ValueError(f"--root is required for {dataset}: the folder holding its annotation files")
    table = load(dataset, root, split)
    present = table.filter(table["exists"])
    if len(present) < len(table):
        log.warning("%d of %d %s %s videos are missing and are left out", len(table) - len(present), len(table),
                    dataset, split)
    return cached_split(present, sampling, Path(cache) / "frames")
