"""The two tables of a store, defined once: embeddings (one row per video or moment, keyed by
``id``) and errors (one row per input that failed, keyed by ``uri``); and the exact-match filters
that search may put on them, built as typed expressions, never as SQL text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa
from lancedb.expr import Expr, col, lit

from .keys import FILTERABLE

KINDS = ("video", "moment")
ERROR_STAGES = ("probe", "decode", "encode", "write")

_PRIMARY_KEY = {"lance-schema:unenforced-primary-key:position": "1"}
_TIMESTAMP = pa.timestamp("us", tz="UTC")

ERRORS_SCHEMA = pa.schema([
    pa.field("uri", pa.string(), nullable=False, metadata=_PRIMARY_KEY),
    pa.field("key", pa.string()),  # null when the input failed before its key was known
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("time", _TIMESTAMP, nullable=False),
])

# A small JPEG of the row's middle frame (centerclip.media.thumbnails); null in rows written before it existed.
THUMBNAIL = pa.field("thumbnail", pa.binary())


def embeddings_schema(dim: int) -> pa.Schema:
    """The embeddings table: one row per video (``start``/``end`` null) or moment."""
    return pa.schema([
        pa.field("id", pa.string(), nullable=False, metadata=_PRIMARY_KEY),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("schedule", pa.string(), nullable=False),
        pa.field("metadata", pa.string(), nullable=False),  # JSON of the manifest's extra columns
        pa.field("indexed_at", _TIMESTAMP, nullable=False),
        THUMBNAIL,
    ])


def equals_filter(values: Mapping[str, str | Iterable[str]]) -> Expr | None:
    """Exact-match filter on FILTERABLE columns: several values of one column match any of them,
    several columns must all match. Values become typed literals, never SQL text."""
    unknown = sorted(set(values) - set(FILTERABLE))
    if unknown:
        raise ValueError(f"cannot filter on {unknown[0]!r}; filterable columns: {', '.join(FILTERABLE)}")
    condition = None
    for column, wanted in values.items():
        values_given = wanted
        wanted = [wanted] if isinstance(wanted, str) else list(wanted) if isinstance(wanted, (list, tuple, set)) else None
        if not wanted or not all(isinstance(value, str) for value in wanted):
            raise TypeError(f"filter values for {column!r} must be a string or a list of strings, got {values_given!r:.80}")
        clause = col(column) == lit(wanted[0]) if len(wanted) == 1 else col(column).isin(wanted)
        condition = clause if condition is None else condition & clause
    return condition
