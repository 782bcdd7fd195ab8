"""LanceDB storage for video and moment embeddings, and for the inputs that failed to index.

One table of embeddings (schema.py) keyed by a stable ``id``, and one table of
errors keyed by ``uri``. Every write is an upsert (``merge_insert``) on a key that is declared as the
table's unenforced primary key: with the key declared, Lance records the keys each commit inserts
and a concurrent commit inserting the same keys conflicts and retries as an update, so parallel
writers cannot duplicate a row (without it they do: lancedb/lancedb#2463).
"""

from __future__ import annotations


import functools
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import Expr, col, lit
from lancedb.index import BTree, IvfRq

from ..media import stores
from .keys import check_keys
from .schema import ERROR_STAGES, ERRORS_SCHEMA, KINDS, THUMBNAIL, embeddings_schema

# Columns looked up by value: ids by the web page (a thumbnail, a video to play, "more like this")
# and the indexer's plan, uris by the plan, replacing upserts and pruning. Without an index each
# lookup scans the table (bench_search.py, one id: 52.7 ms at 1M rows, 2.9 ms with a BTREE).
KEY_COLUMNS = ("id", "uri")

# Values per IN-list filter of a lookup or delete by key. Each filter is a query (a scan where the
# column has no index yet), so few long lists beat many short ones: looking up every uri and id of
# 1M indexed videos took 246 s in lists of 2,048 without indexes, 35 s in lists of 32,768
# (benchmarks/RESULTS.md). Lookups of that many keys now read the columns once instead
# (IndexConfig.lookup_scan_share).
IN_CHUNK = 32_768

T = TypeVar("T")


def retry_conflicts(write: Callable[[], T], attempts: int = 8) -> T:
    """Run a write, retrying when a concurrent commit wins the race. merge_insert already retries
    internally; this covers the rest (deletes, index commits, a merge out of internal retries)."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception as error:  # lancedb raises conflicts as plain errors
            if "conflict" not in str(error).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2 ** attempt * (1 + random.random()))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class IndexConfig:
    """When to build the ANN index, how to search it, and how to look keys up. Below ``min_rows``
    search is an exact scan; above, IVF_RQ (RaBitQ codes: trains in seconds where IVF_PQ takes
    minutes on 2 cores) with cosine distance, candidates re-ranked on the full vectors. Defaults chosen by
    benchmarks/bench_search.py (figures in benchmarks/RESULTS.md)."""

    min_rows: int = 5_000  # an exact scan of 5k x 512 takes tens of ms; of 100k, most of a second
    partition_rows: int = 4096  # rows per IVF partition at training: partitions = rows / partition_rows
    nprobes: int = 40
    # Rows re-ranked on the full vectors, at least ``limit``: LanceDB's refine_factor is this over
    # the limit, so a search that oversamples (grouping rows into videos) does not re-rank 20x more.
    refine_rows: int = 200
    rebuild_growth: float = 2.0  # retrain when partitions have grown this much past partition_rows
    # A lookup of keys numbering at least this share of the table's rows reads the columns once
    # instead of making IN-list queries: at 1M rows a BTREE lookup cost about 9 us a key, a scan
    # 0.5 us a row (benchmarks/RESULTS.md, bench_plan.py). inf: always IN lists.
    lookup_scan_share: float = 1 / 16


class Store:
    """The embeddings table and its errors table in one LanceDB database."""

    def __init__(self, videos: lancedb.table.Table, errors: lancedb.table.Table, index: IndexConfig):
        self.videos = videos
        self.errors_table = errors
        self.index = index

    @classmethod
    def open(cls, uri: str, *, dim: int | None = None, table: str = "videos",
             index: IndexConfig = IndexConfig(),
             read_consistency: timedelta = timedelta(0), index_cache_bytes: int | None = None) -> Store:
        """Open (or, given ``dim``, create) the tables. ``read_consistency`` is how stale a read may
        be: 0 makes every query see rows other processes committed, at one manifest check each.
        ``index_cache_bytes`` bounds LanceDB's cache of index pages (default: LanceDB's own, GBs),
        which a lookup of every key of a large table would otherwise fill with all of them."""
        if dim is None and "://" not in uri and not os.path.isdir(uri):  # opening to read creates nothing
            raise FileNotFoundError(f"no database at {uri}: index videos into it first "
                                    f"(python pipelines/index.py VIDEOS --db {uri}), or pass the --db that was indexed")
        if stores.is_object(uri):
            stores.check_db(uri)  # no such bucket, no credentials, no endpoint: one line, not LanceDB's
        session = None if index_cache_bytes is None else lancedb.Session(index_cache_size_bytes=index_cache_bytes,
                                                                         metadata_cache_size_bytes=index_cache_bytes)
        db = lancedb.connect(uri, read_consistency_interval=read_consistency, storage_options=stores.lance_options(uri) or None,
                             session=session)
        try:
            videos = db.open_table(table)
        except ValueError:
            if dim is None:
                raise ValueError(f"no table {table!r} in {uri}: index videos into it first, or pass the --table "
                                 f"that was indexed (tables there: {', '.join(db.list_tables().tables) or 'none'})") from None
            videos = db.create_table(table, schema=embeddings_schema(dim), exist_ok=True)
        stored_dim = videos.schema.field("vector").type.list_size
        if dim is not None and dim != stored_dim:
            raise ValueError(f"table {table!r} holds {stored_dim}-d vectors, not {dim}-d: "
                             "use the model it was indexed with, or another table")
        if dim is not None and THUMBNAIL.name not in videos.schema.names:  # a table from before thumbnails
            retry_conflicts(lambda: videos.add_columns(THUMBNAIL))
        errors = db.create_table(f"{table}_errors", schema=ERRORS_SCHEMA, exist_ok=True)
        return cls(videos, errors, index)

    @functools.cached_property
    def dim(self) -> int:
        # A column's type never changes; asking the table costs a schema read per search.
        return self.videos.schema.field("vector").type.list_size

    def count(self) -> int:
        return self.videos.count_rows()

    def rows(self, columns: Mapping[str, Any] | pa.Table) -> pa.Table:
        """Validate rows for the embeddings table: a pyarrow table or a dict of columns (lists or
        numpy arrays, e.g. a Ray Data batch; ``vector`` may be a [N, D] array). ``indexed_at``
        defaults to now and ``metadata`` to "{}". A key listed twice keeps its last row."""
        if isinstance(columns, pa.Table):
            columns = {name: columns.column(name) for name in columns.column_names}
        columns = dict(columns)
        count = len(columns["id"])
        vectors = columns["vector"]
        if not isinstance(vectors, (pa.Array, pa.ChunkedArray)):
            vectors = np.asarray(vectors if isinstance(vectors, np.ndarray) else list(vectors), np.float32)
            if vectors.shape != (count, self.dim):
                raise ValueError(f"vector must be [{count}, {self.dim}], got {list(vectors.shape)}")
            columns["vector"] = pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), self.dim)
        columns.setdefault("metadata", ["{}"] * count)
        columns.setdefault("indexed_at", [datetime.now(timezone.utc)] * count)
        columns.setdefault(THUMBNAIL.name, [None] * count)
        table = pa.table({field.name: columns[field.name] for field in embeddings_schema(self.dim)},
                         schema=embeddings_schema(self.dim))
        check_keys(table.column("id").to_pylist())
        check_keys(table.column("video_id").to_pylist())
        kinds = set(table.column("kind").to_pylist())
        if not kinds <= set(KINDS):
            raise ValueError(f"kind must be one of {KINDS}, got {sorted(kinds - set(KINDS))}")
        videos = pc.equal(table.column("kind"), "video")
        if not pc.all(pc.or_(pc.invert(videos), pc.equal(table.column("id"), table.column("video_id")))).as_py():
            raise ValueError("a video row's video_id must be its own id")
        spans = pc.less(table.column("start"), table.column("end")).fill_null(False)
        if not pc.all(pc.or_(videos, spans)).as_py():
            raise ValueError("a moment row needs start < end")
        return _keep_last(table, "id")

    def upsert(self, columns: Mapping[str, Any] | pa.Table, *, replace: bool = False) -> int:
        """Insert rows, replacing rows with the same id; the inputs written leave the errors table.
        ``replace``: the rows are *all* the rows of their uris (whole videos with their moments, as
        the indexer writes them), so rows the table holds for these uris under other ids (an older
        version of the file, moments it no longer has) are deleted in the same commit: search never
        sees two generations of a file. Returns the number of rows written."""
        table = self.rows(columns)
        if not len(table):
            return 0
        uris = sorted(set(table.column("uri").to_pylist()))

        def merge():
            builder = self.videos.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
            # The delete clause scans the table: only batches that replace something pay for it.
            if replace and self._uris_with_rows(uris):
                builder = builder.when_not_matched_by_source_delete(col("uri").isin(uris))
            return builder.execute(table)
        retry_conflicts(merge)
        # A kill between the two commits leaves an error row beside the rows: reconcile() clears it.
        self._clear_errors(set(uris))
        return len(table)

    def record_errors(self, failures: Iterable[Mapping[str, Any]]) -> int:
        """Upsert failures: dicts with uri, stage, reason and optionally key. One row per uri: a
        failure that happens again replaces the previous one. An input with an error has no rows:
        the rows of these uris are deleted first (a file that changed and now fails leaves no stale
        rows; a kill in between leaves neither, and the next run tries the file again)."""
        failures = list(failures)
        for failure in failures:
            if failure["stage"] not in ERROR_STAGES:
                raise ValueError(f"stage must be one of {ERROR_STAGES}, got {failure['stage']!r}")
        now = datetime.now(timezone.utc)
        table = pa.Table.from_pylist([
            {"uri": failure["uri"], "key": failure.get("key"), "stage": failure["stage"],
             "reason": str(failure["reason"]), "time": now} for failure in failures], schema=ERRORS_SCHEMA)
        table = self._changed_errors(_keep_last(table, "uri"))
        if len(table):
            self._delete_rows(self._uris_with_rows(table.column("uri").to_pylist()))
            retry_conflicts(lambda: self.errors_table.merge_insert("uri").when_matched_update_all()
                            .when_not_matched_insert_all().execute(table))
        return len(table)

    def _changed_errors(self, table: pa.Table, chunk: int = IN_CHUNK) -> pa.Table:
        """The failures of ``table`` that the errors table does not already hold as they are (same
        key, stage and reason): a re-run over an unchanged library writes nothing, so neither
        table gains a version."""
        if not len(table) or not self.errors_table.count_rows():
            return table
        fields = ["uri", "key", "stage", "reason"]
        held = set()
        for condition in _isin_chunks("uri", table.column("uri").to_pylist(), chunk):
            found = self.errors_table.search().where(condition).select(fields).limit(None).to_arrow()
            held.update(zip(*(found.column(name).to_pylist() for name in fields)))
        new = [(row not in held) for row in zip(*(table.column(name).to_pylist() for name in fields))]
        return table.filter(pa.array(new, pa.bool_()))

    def errors(self) -> pa.Table:
        return self.errors_table.to_arrow()

    def error_batches(self, columns: list[str], rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The errors table's ``columns``, a batch at a time."""
        if self.errors_table.count_rows():
            yield from self.errors_table.search().select(columns).limit(None).to_batches(rows)

    def failed_keys(self, uris: Iterable[str] | None = None, chunk: int = IN_CHUNK) -> dict[str, str | None]:
        """uri -> the key of the version that failed (None: failed before it had a key), of
        ``uris`` (None: of every failed input)."""
        if uris is None:
            errors = self.errors_table.to_arrow().select(["uri", "key"])
        else:
            uris = set(uris)
            if not uris or not self.errors_table.count_rows():
                return {}
            parts = [self.errors_table.search().where(condition).select(["uri", "key"]).limit(None).to_arrow()
                     for condition in _isin_chunks("uri", uris, chunk)]
            errors = pa.concat_tables(parts)
        return dict(zip(errors.column("uri").to_pylist(), errors.column("key").to_pylist()))

    def reconcile(self) -> int:
        """Make the errors table agree with the rows: an error row whose uri has rows is left by a
        run killed between the rows' commit and the error's removal, and the rows are the newer
        truth. Returns the number of error rows removed."""
        stale = self._uris_with_rows(self.failed_keys())
        self._clear_errors(stale)
        return len(stale)

    def video_ids(self, uris: Iterable[str], chunk: int = IN_CHUNK, *, with_thumbnail: bool = False) -> dict[str, set[str]]:
        """uri -> the ids of its video rows (more than one: generations a replace never removed);
        with ``with_thumbnail``, only rows that have a thumbnail (rows from before thumbnails do not)."""
        where = col("kind") == lit("video")
        if with_thumbnail:
            where = where & (col(THUMBNAIL.name) != lit(b""))  # false for null, too
        hits = self._lookup("uri", uris, ["uri", "video_id"], where, chunk)
        found: dict[str, set[str]] = {}
        for uri, video_id in zip(hits.column("uri").to_pylist(), hits.column("video_id").to_pylist()):
            found.setdefault(uri, set()).add(video_id)
        return found

    def delete_videos(self, video_ids: Iterable[str], chunk: int = IN_CHUNK) -> int:
        """Delete videos with their moments; returns the number of rows deleted."""
        deleted = 0
        for condition in _isin_chunks("video_id", check_keys(video_ids), chunk):
            deleted += retry_conflicts(lambda: self.videos.delete(condition)).num_deleted_rows
        return deleted

    def prune(self, covers: Callable[[str], bool], keep: Callable[[str], bool] | set[str]) -> dict[str, int]:
        """Remove the rows and error rows of uris that ``covers`` speaks for and ``keep`` does not
        (a predicate, or a set): the files a listing no longer finds. The table's uris are read a
        batch at a time. Returns how many videos, rows and error rows went."""
        kept = keep.__contains__ if isinstance(keep, set) else keep
        gone_videos: set[str] = set()
        if self.count():
            videos = self.videos.search().where(col("kind") == lit("video")).select(["uri"]).limit(None)
            for batch in videos.to_batches(65_536):
                gone_videos.update(uri for uri in batch.column("uri").to_pylist() if not kept(uri) and covers(uri))
        gone_errors = {uri for batch in self.error_batches(["uri"]) for uri in batch.column("uri").to_pylist()
                       if not kept(uri) and covers(uri)}
        rows = self._delete_rows(gone_videos)
        self._clear_errors(gone_errors)
        return {"videos": len(gone_videos), "rows": rows, "errors": len(gone_errors)}

    def _uris_with_rows(self, uris: Iterable[str], chunk: int = IN_CHUNK) -> set[str]:
        return set(self._lookup("uri", uris, ["uri"], None, chunk).column("uri").to_pylist())

    def _delete_rows(self, uris: Iterable[str], chunk: int = IN_CHUNK) -> int:
        deleted = 0
        for condition in _isin_chunks("uri", uris, chunk):
            deleted += retry_conflicts(lambda: self.videos.delete(condition)).num_deleted_rows
        return deleted

    def _clear_errors(self, uris: set[str], chunk: int = IN_CHUNK) -> None:
        if uris and self.errors_table.count_rows():
            for condition in _isin_chunks("uri", uris, chunk):
                retry_conflicts(lambda: self.errors_table.delete(condition))

    def indexed_keys(self, keys: Iterable[str], chunk: int = IN_CHUNK, *, with_thumbnail: bool = False) -> set[str]:
        """The subset of ``keys`` (ids of videos or moments) that the table already holds; with
        ``with_thumbnail``, only rows that have a thumbnail (rows from before thumbnails do not)."""
        having = col(THUMBNAIL.name) != lit(b"") if with_thumbnail else None  # false for null, too
        return set(self._lookup("id", check_keys(keys), ["id"], having, chunk).column("id").to_pylist())

    def _lookup(self, column: str, values: Iterable[str], columns: list[str], where: Expr | None, chunk: int) -> pa.Table:
        """The ``columns`` of the rows whose ``column`` is one of ``values`` and that match ``where``.
        Few values against the table: IN-list filters of ``chunk`` values, each a query (an index
        lookup, or a scan where the column has no index yet). Many, as when a re-run's plan looks up
        every video of the library: one scan of ``columns``, filtered here (bench_plan.py)."""
        values = set(values)
        if len(values) >= self.index.lookup_scan_share * self.count():
            query = self.videos.search().select(sorted({column, *columns}))
            table = (query.where(where) if where is not None else query).limit(None).to_arrow()
            return table.filter(pc.is_in(table.column(column), value_set=pa.array(list(values), pa.string()))).select(columns)
        parts = [self.videos.search().where(condition if where is None else condition & where).select(columns)
                 .limit(None).to_arrow() for condition in _isin_chunks(column, values, chunk)]
        return pa.concat_tables(parts) if parts else embeddings_schema(self.dim).empty_table().select(columns)

    def has(self, key: str) -> bool:
        return bool(self.indexed_keys([key]))

    def ensure_index(self) -> str:
        """Create the ANN index once the table is large enough, fold new rows into it, and retrain
        it when the table has outgrown its partitions; from the same size on, keep BTREE indexes on
        the key columns (see KEY_COLUMNS). Returns what it did to the ANN index: "none" (too small
        for an index, or up to date), "created", "rebuilt" or "updated"."""
        rows = self.count()
        if rows < self.index.min_rows:
            return "none"
        indexes = self.videos.list_indices()
        self._ensure_key_indexes(indexes)
        partitions = _index_partitions(indexes)
        if partitions is None or rows > self.index.rebuild_growth * self.index.partition_rows * partitions:
            self._build_index(rows, partitions)
            return "created" if partitions is None else "rebuilt"
        if self.videos.index_stats(_index_name(partitions)).num_unindexed_rows:
            # Assigns new rows to the trained partitions (and compacts); no retraining.
            retry_conflicts(lambda: self.videos.optimize())
            return "updated"
        return "none"

    def _ensure_key_indexes(self, indexes: list) -> None:
        """BTREE indexes on the key columns that ``indexes`` (the table's) lack; the optimize() that
        folds new rows into the ANN index folds them into these too, and rows not yet in an index
        are still scanned."""
        indexed = {tuple(index.columns) for index in indexes}
        for column in KEY_COLUMNS:
            if (column,) not in indexed:
                retry_conflicts(lambda: self.videos.create_index(column, config=BTree()))

    def _build_index(self, rows: int, old: int | None) -> None:
        """Train a vector index for ``rows`` rows in place of the one of ``old`` partitions."""
        partitions = max(1, rows // self.index.partition_rows)
        config = IvfRq(distance_type="cosine", num_partitions=partitions)
        # The new index is committed before the old one is dropped, so searches never fall back
        # to a full scan in between.
        retry_conflicts(lambda: self.videos.create_index("vector", config=config, name=_index_name(partitions)))
        if old is not None and old != partitions:
            retry_conflicts(lambda: self.videos.drop_index(_index_name(old)))

    def search(self, vector: np.ndarray, limit: int, where: Expr | None = None) -> pa.Table:
        """The ``limit`` rows nearest to ``vector`` by cosine, best first, with a ``score`` column
        (cosine similarity). Exact below the index threshold, ANN with exact re-ranking above."""
        vector = np.asarray(vector, np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"query vector has {vector.shape[0]} dims, the table {self.dim}")
        query = (self.videos.search(vector, vector_column_name="vector").distance_type("cosine")
                 .nprobes(self.index.nprobes).refine_factor(-(-self.index.refine_rows // limit)).limit(limit)
                 .select(["id", "video_id", "kind", "uri", "start", "end", "metadata", "_distance"]))
        if where is not None:
            query = query.where(where)
        hits = query.to_arrow()
        score = pc.subtract(1.0, hits.column("_distance").cast(pa.float64()))
        return hits.drop_columns(["_distance"]).append_column("score", score)


def _isin_chunks(column: str, values: Iterable[str], chunk: int) -> Iterator[Expr]:
    """``column IN values`` for the distinct values, as filters of at most ``chunk`` values each
    (see IN_CHUNK), so that no query's filter or result grows with the library."""
    values = sorted(set(values))
    for begin in range(0, len(values), chunk):
        yield col(column).isin(values[begin:begin + chunk])


def _index_partitions(indexes: list) -> int | None:
    """The partition count of the vector index among ``indexes``, which its name records (stats do not)."""
    for index in indexes:
        if index.columns == ["vector"]:
            return int(index.name.removeprefix("vector_ivf"))
    return None


def _index_name(partitions: int) -> str:
    return f"vector_ivf{partitions}"


def _keep_last(table: pa.Table, key: str) -> pa.Table:
    """merge_insert leaves a key that appears twice in one batch undefined; the last one wins."""
    keys = table.column(key).to_pylist()
    last = {value: row for row, value in enumerate(keys)}
    if len(last) == len(keys):
        return table
    return table.take(sorted(last.values()))
