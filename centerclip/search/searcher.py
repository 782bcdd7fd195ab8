"""Search an indexed collection: text -> ranked videos, each with its best-matching time range.

The store holds one row per video and per moment; a query is matched against all of them and the
hits are grouped by video, so a video ranks by its best row and reports that row's time range.
The command line is pipelines/search.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..model.encoder import EncoderConfig, VideoEncoder
from ..media.pixels import center_crop
from ..index.listing import list_inputs
from ..index.schema import equals_filter
from ..index.store import Store
from ..media.decoding import Decoder, SamplingConfig

# Rows fetched per wanted video: a long video's moments crowd the nearest rows, and every video
# needs only its best one.
OVERSAMPLE = 8


@dataclass(frozen=True)
class Result:
    video_id: str
    uri: str
    score: float  # cosine similarity of the best-matching row
    start: float | None  # the best moment's time range in seconds; None when it is the whole video
    end: float | None
    metadata: str  # JSON of the manifest's extra columns
    row_id: str  # the best-matching row: the video's own id, or its moment's

    def to_dict(self) -> dict:
        return {**asdict(self), "metadata": json.loads(self.metadata)}


@dataclass(frozen=True)
class SearchConfig:
    db: str = "centerclip.lancedb"  # where pipelines/index.py writes by default
    table: str = "videos"
    model: str | None = None  # None: the built-in model
    pretrained: str | None = None
    k: int = 5
    where: tuple[tuple[str, str], ...] = ()  # (column, value) pairs: see store.equals_filter


class Searcher:
    """Queries a store with the encoder that embedded it. Without an encoder (where queries are
    embedded elsewhere, e.g. by the Ray Serve app's encoder deployment) it searches by vector only."""

    def __init__(self, store: Store, encoder: VideoEncoder | None):
        if encoder is not None and encoder.embed_dim != store.dim:
            raise ValueError(f"the encoder embeds into {encoder.embed_dim} dims but the table holds "
                             f"{store.dim}-d vectors: search with the model that indexed it")
        self.store = store
        self.encoder = encoder.eval() if encoder is not None else None

    @classmethod
    def create(cls, config: SearchConfig) -> Searcher:
        store = Store.open(config.db, table=config.table)
        return cls(store, VideoEncoder.create(EncoderConfig(model=config.model, pretrained=config.pretrained)))

    def _model(self) -> VideoEncoder:
        if self.encoder is None:
            raise ValueError("this Searcher has no encoder: it searches by vector only")
        return self.encoder

    @torch.inference_mode()
    def embed(self, query: str) -> np.ndarray:
        """A query's text embedding; long queries are truncated to the text context by the tokenizer."""
        if not isinstance(query, str):
            raise TypeError(f"a query is a string, got {type(query).__name__} {query!r:.60}")
        if not query.strip():
            raise ValueError("the query is empty: say what to look for, e.g. \"a dog runs on a beach\"")
        return self._model().encode_text([query.strip()])[0].float().cpu().numpy()

    def text(self, query: str, k: int = 5, where: Mapping[str, str | Sequence[str]] | None = None) -> list[Result]:
        """The k videos that best match a text query."""
        return self.vector(self.embed(query), k, where)

    def similar(self, vector: np.ndarray, k: int = 5, exclude: str | None = None,
                where: Mapping[str, str | Sequence[str]] | None = None) -> list[Result]:
        """The k videos nearest to an embedding (e.g. of a video file), without the video
        ``exclude`` (its id) so that a video in the index is not returned as similar to itself."""
        results = self.vector(vector, k + (exclude is not None), where)
        return [result for result in results if result.video_id != exclude][:k]

    @torch.inference_mode()
    def video(self, path: str, k: int = 5, where: Mapping[str, str | Sequence[str]] | None = None) -> list[Result]:
        """The k videos most similar to a video file (decoded in an isolated process), without the
        file itself when it is in the index."""
        encoder = self._model()
        sampling = SamplingConfig(frames=encoder.frames, size=encoder.image_size[0])
        with Decoder() as decoder:
            clip = decoder.sample_clip(path, sampling)
        frames = torch.from_numpy(np.ascontiguousarray(center_crop(clip.frames, sampling.size)))[None]
        device = encoder.clip.logit_scale.device
        vector = encoder.encode_video(encoder.preprocess(frames.to(device)))[0].float().cpu().numpy()
        sources = list_inputs([path]).sources  # the file itself, even when its name has glob characters
        return self.similar(vector, k, exclude=sources[0].key if sources else None, where=where)

    def vector(self, vector: np.ndarray, k: int = 5,
               where: Mapping[str, str | Sequence[str]] | None = None) -> list[Result]:
        """The k videos whose best row is nearest to ``vector``."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (the number of videos to return) must be a whole number of at least 1, got {k!r}")
        condition = equals_filter(where or {})
        limit = k * OVERSAMPLE
        while True:
            hits = self.store.search(vector, limit, condition)
            results = best_per_video(hits.to_pylist())
            # Fewer rows than asked means the table (or the filter) has no more to give.
            if len(results) >= k or len(hits) < limit:
                return results[:k]
            limit *= 4


def best_per_video(rows: list[dict]) -> list[Result]:
    """Rows sorted best first -> one result per video, at its best row, in the same order."""
    best: dict[str, Result] = {}
    for row in rows:
        if row["video_id"] not in best:
            moment = row["kind"] == "moment"
            best[row["video_id"]] = Result(video_id=row["video_id"], uri=row["uri"], score=row["score"],
                                           start=row["start"] if moment else None,
                                           end=row["end"] if moment else None, metadata=row["metadata"],
                                           row_id=row["id"])
    return list(best.values())


def format_table(results: list[Result]) -> str:
    lines = [f"{'rank':>4}  {'score':>6}  {'time range':>17}  uri"]
    for rank, result in enumerate(results, 1):
        span = "whole video" if result.start is None else f"{result.start:.1f}-{result.end:.1f} s"
        lines.append(f"{rank:>4}  {result.score:6.3f}  {span:>17}  {result.uri}")
    return "\n".join(lines) if results else "no results"


def search(config: SearchConfig, query: str | None = None, video: str | None = None,
           note: Callable[[str], None] | None = None) -> list[Result]:
    """Text query or video file (exactly one) -> the k best videos. ``note`` is told, in one
    line, when the query is longer than the text tower reads."""
    if (query is None) == (video is None):
        raise ValueError("give either a text query or --video PATH")
    where: dict[str, list[str]] = {}
    for column, value in config.where:
        where.setdefault(column, []).append(value)
    searcher = Searcher.create(config)
    if video is not None:
        return searcher.video(video, config.k, where)
    unread, context = searcher._model().unread_tokens(query)
    if unread and note is not None:
        note(f"note: the query is cut to the model's context of {context} tokens: its last {unread} tokens "
             f"were not used")
    return searcher.text(query, config.k, where)
