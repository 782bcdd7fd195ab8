"""Search an indexed collection: text -> ranked videos, each with its best-matching time range.

The store holds one row per video and per moment; a query is matched against all of them and the
hits are grouped by video, so a video ranks by its best row and reports that row's time range.

    python pipelines/search.py "a red circle moves left" --db videos.lancedb [--k 5] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .encoder import DEFAULT_MODEL, EncoderConfig, VideoEncoder
from .frames import center_crop
from .listing import list_inputs
from .store import FILTERABLE, Store, equals_filter
from .video import Decoder, SamplingConfig, VideoDecodeError

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
    db: str
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
        if not isinstance(query, str) or not query.strip():
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
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
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


def parse_where(text: str) -> tuple[str, str]:
    column, separator, value = text.partition("=")
    if not separator or column not in FILTERABLE:
        raise argparse.ArgumentTypeError(
            f"expected COLUMN=VALUE with COLUMN one of {', '.join(FILTERABLE)}, got {text!r}")
    return column, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Search indexed videos with a text query, or for videos like a video file.")
    parser.add_argument("query", nargs="?", help="what to look for, e.g. \"a red circle moves left\"")
    parser.add_argument("--video", metavar="PATH", help="instead of a text query: find videos similar to this file")
    parser.add_argument("--db", required=True,
                        help="LanceDB database (directory or object-store URI) written by pipelines/index.py")
    parser.add_argument("--table", default="videos", help="embeddings table in the database (default: videos)")
    parser.add_argument("--k", type=int, default=5, help="number of videos to return (default: 5)")
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    parser.add_argument("--model", default=None,
                        help=f"open_clip model name the collection was indexed with (default: the built-in {DEFAULT_MODEL})")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip pretrained tag or weights file of that model (default: the model's own)")
    parser.add_argument("--where", type=parse_where, action="append", default=[], metavar="COLUMN=VALUE",
                        help=f"keep only rows whose COLUMN equals VALUE ({', '.join(FILTERABLE)}); "
                             "repeat a column to accept any of several values, repeat columns to require all")
    return parser


def search(config: SearchConfig, query: str | None = None, video: str | None = None) -> list[Result]:
    """Text query or video file (exactly one) -> the k best videos."""
    if (query is None) == (video is None):
        raise ValueError("give either a text query or --video PATH")
    where: dict[str, list[str]] = {}
    for column, value in config.where:
        where.setdefault(column, []).append(value)
    searcher = Searcher.create(config)
    return searcher.text(query, config.k, where) if video is None else searcher.video(video, config.k, where)


def main(argv: Sequence[str] | None = None) -> list[Result]:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = SearchConfig(db=args.db, table=args.table, model=args.model, pretrained=args.pretrained,
                          k=args.k, where=tuple(args.where))
    try:
        results = search(config, args.query, args.video)
    except (ValueError, VideoDecodeError) as error:
        parser.error(str(error))
    print(json.dumps([result.to_dict() for result in results], indent=2) if args.json else format_table(results))
    return results
