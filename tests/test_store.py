import threading
import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from centerclip.index.keys import moment_key, video_key
from centerclip.index.schema import ERRORS_SCHEMA, embeddings_schema, equals_filter
from centerclip.index.store import IndexConfig, Store, retry_conflicts

DIM = 8


def rows(keys, *, uri=None, value=0.0, kind="video", model="m"):
    vectors = np.random.default_rng(int(value * 1000)).standard_normal((len(keys), DIM)).astype(np.float32)
    return {"id": keys, "video_id": keys, "kind": [kind] * len(keys),
            "uri": [uri or f"file:///{key}.mp4" for key in keys],
            "start": [None] * len(keys), "end": [None] * len(keys), "vector": vectors,
            "model": [model] * len(keys), "schedule": [f"v{value}"] * len(keys)}


def keys(count, start=0):
    return [video_key(f"/videos/{i}.mp4", 1000 + i, 7) for i in range(start, start + count)]


@pytest.fixture(params=["scans", "key indexes"])
def store(tmp_path, request):
    """A new store; the same tests run with BTREE indexes on the key columns (made on the empty
    table, as a large library has them), which must change no answer."""
    store = Store.open(str(tmp_path / "db"), dim=DIM)
    if request.param == "key indexes":
        store._ensure_key_indexes(store.videos.list_indices())
    return store


def test_schema_declares_the_keys_and_the_vector_size(store):
    assert store.videos.schema.equals(embeddings_schema(DIM), check_metadata=True)
    assert store.errors_table.schema.equals(ERRORS_SCHEMA, check_metadata=True)
    assert store.videos.schema.field("id").metadata == {b"lance-schema:unenforced-primary-key:position": b"1"}
    assert store.videos.schema.field("vector").type == pa.list_(pa.float32(), DIM)


def test_open_checks_the_vector_size(tmp_path, store):
    with pytest.raises(ValueError, match="8-d"):
        Store.open(str(tmp_path / "db"), dim=16)
    with pytest.raises(ValueError, match="no table 'other' in .*tables there: videos"):
        Store.open(str(tmp_path / "db"), table="other")
    with pytest.raises(FileNotFoundError, match="no database at .*nowhere: index videos into it first"):
        Store.open(str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    assert Store.open(str(tmp_path / "db")).dim == DIM


def test_keys_are_stable_hex_digests():
    key = video_key("s3://bucket/a.mp4", 10, 20)
    assert key == video_key("s3://bucket/a.mp4", 10, 20) and len(key) == 32
    assert key != video_key("s3://bucket/a.mp4", 10, 21)
    assert moment_key(key, 1.0, 2.0) == moment_key(key, 1.0000001, 2.0)
    assert moment_key(key, 1.0, 2.0) != moment_key(key, 1.0, 3.0)
    with pytest.raises(ValueError, match="not a key"):
        moment_key("x' OR 1=1", 0, 1)


def test_upsert_is_idempotent_and_updates(store):
    ids = keys(5)
    assert store.upsert(rows(ids, value=1.0)) == 5
    store.upsert(rows(ids, value=1.0))
    store.upsert(rows(ids[:2], value=2.0))
    table = store.videos.to_arrow()
    assert sorted(table.column("id").to_pylist()) == sorted(ids)
    schedules = dict(zip(table.column("id").to_pylist(), table.column("schedule").to_pylist()))
    assert [schedules[key] for key in ids] == ["v2.0", "v2.0", "v1.0", "v1.0", "v1.0"]


def test_upsert_keeps_the_last_of_a_repeated_key_and_validates(store):
    ids = keys(2)
    batch = rows([ids[0], ids[1], ids[0]], value=3.0)
    batch["schedule"] = ["first", "b", "last"]
    assert store.upsert(batch) == 2
    table = store.videos.to_arrow()
    assert dict(zip(table.column("id").to_pylist(), table.column("schedule").to_pylist()))[ids[0]] == "last"
    with pytest.raises(ValueError, match="not a key"):
        store.upsert(rows(["1' OR '1'='1"]))
    with pytest.raises(ValueError, match="kind"):
        store.upsert(rows(ids, kind="clip"))
    with pytest.raises(ValueError, match="own id"):
        store.upsert({**rows(ids), "video_id": ids[::-1]})
    with pytest.raises(ValueError, match="start < end"):
        store.upsert({**rows(ids, kind="moment"), "start": [1.0, 2.0], "end": [2.0, None]})
    with pytest.raises(ValueError, match="vector"):
        store.upsert({**rows(ids), "vector": np.zeros((2, DIM + 1), np.float32)})


def test_concurrent_writers_leave_each_key_once(tmp_path):
    # Two writers, each with its own connection, upsert overlapping batches of new keys at the same
    # time. Without the declared primary key this leaves 80 rows for 60 keys (lancedb#2463).
    path = str(tmp_path / "db")
    ids = keys(60)
    start = threading.Barrier(2)

    def write(worker):
        writer = Store.open(path, dim=DIM)  # every writer opens (or creates) the tables itself
        start.wait()
        for begin in range(0, len(ids), 10):
            writer.upsert(rows(ids[begin:begin + 20], value=float(worker)))

    writers = [threading.Thread(target=write, args=(worker,)) for worker in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    written = Store.open(path).videos.to_arrow().column("id").to_pylist()
    assert len(written) == len(ids) and set(written) == set(ids)


def test_retry_conflicts_retries_only_conflicts():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Commit conflict for version 7")
        return "done"

    assert retry_conflicts(flaky) == "done" and len(calls) == 3
    with pytest.raises(RuntimeError, match="disk full"):
        retry_conflicts(lambda: (_ for _ in ()).throw(RuntimeError("disk full")))


def test_errors_are_one_row_per_uri_and_cleared_by_success(store):
    ids = keys(2)
    store.record_errors([{"uri": "file:///a.mp4", "stage": "decode", "reason": "moov atom not found"},
                         {"uri": "file:///b.mp4", "key": ids[1], "stage": "probe", "reason": "no such file"}])
    store.record_errors([{"uri": "file:///a.mp4", "key": ids[0], "stage": "encode", "reason": "CUDA OOM"}])
    errors = {row["uri"]: row for row in store.errors().to_pylist()}
    assert sorted(errors) == ["file:///a.mp4", "file:///b.mp4"]
    assert errors["file:///a.mp4"]["stage"] == "encode" and errors["file:///a.mp4"]["key"] == ids[0]
    store.upsert(rows(ids[:1], uri="file:///a.mp4"))
    assert store.errors().column("uri").to_pylist() == ["file:///b.mp4"]
    with pytest.raises(ValueError, match="stage"):
        store.record_errors([{"uri": "x", "stage": "upload", "reason": "?"}])


def test_indexed_keys_skips_what_is_there(store):
    ids = keys(30)
    store.upsert(rows(ids[:20]))
    assert store.indexed_keys(ids) == set(ids[:20])
    assert store.indexed_keys(ids, chunk=7) == set(ids[:20])
    assert store.has(ids[0]) and not store.has(ids[25])
    with pytest.raises(ValueError, match="not a key"):
        store.indexed_keys(["') OR true --"])


@pytest.mark.parametrize("share", [1 / 16, float("inf")])  # many keys: one scan; inf: IN lists always
def test_lookups_by_in_lists_and_by_one_scan_agree(tmp_path, share):
    store = Store.open(str(tmp_path / "db"), dim=DIM, index=IndexConfig(lookup_scan_share=share))
    ids = keys(100)
    store.upsert({**rows(ids[:80]), "uri": [f"/v/{i}.mp4" for i in range(80)],
                  "thumbnail": [b"jpeg"] * 70 + [None] * 10})  # the last 10 from before thumbnails
    few, many = ids[78:81], ids[10:100]  # 3 of 80 rows: IN lists; 90: a scan, unless share is inf
    assert store.indexed_keys(few, chunk=2) == set(ids[78:80])
    assert store.indexed_keys(many, chunk=7) == set(ids[10:80])
    assert store.indexed_keys(few, with_thumbnail=True) == set()
    assert store.indexed_keys(many, with_thumbnail=True) == set(ids[10:70])
    assert store.video_ids(["/v/3.mp4", "/v/99.mp4"]) == {"/v/3.mp4": {ids[3]}}
    assert store.video_ids(f"/v/{i}.mp4" for i in range(100)) == {f"/v/{i}.mp4": {ids[i]} for i in range(80)}
    assert store.indexed_keys([]) == set() and store.video_ids([]) == {}


def test_readers_see_rows_written_by_another_handle(tmp_path, store):
    reader = Store.open(str(tmp_path / "db"))
    store.upsert(rows(keys(3)))
    assert reader.count() == 3


def test_search_is_exact_below_the_threshold_and_filters(store):
    ids = keys(50)
    batch = rows(ids)
    batch.update(kind=["video"] * 25 + ["moment"] * 25, video_id=ids[:25] + [ids[0]] * 25,
                 start=[None] * 25 + [float(i) for i in range(25)], end=[None] * 25 + [i + 1.0 for i in range(25)])
    store.upsert(batch)
    hits = store.search(batch["vector"][30], 5)
    assert hits.column("id")[0].as_py() == ids[30] and hits.column("score")[0].as_py() == pytest.approx(1.0, abs=1e-5)
    moments = store.search(batch["vector"][3], 50, equals_filter({"kind": "moment"}))
    assert set(moments.column("kind").to_pylist()) == {"moment"} and len(moments) == 25


def test_filters_are_literals_not_sql(store):
    store.upsert(rows(keys(3)))
    store.upsert(rows(keys(1, 3), uri="' OR '1'='1"))
    vector = np.ones(DIM, np.float32)
    assert store.search(vector, 10, equals_filter({"uri": "' OR '1'='1"})).column("uri").to_pylist() == ["' OR '1'='1"]
    assert len(store.search(vector, 10, equals_filter({"uri": "x' OR uri != 'x"}))) == 0
    with pytest.raises(ValueError, match="cannot filter"):
        equals_filter({"uri = uri OR 1": "x"})


def test_ensure_index_creates_updates_and_rebuilds(tmp_path):
    store = Store.open(str(tmp_path / "db"), dim=32, index=IndexConfig(min_rows=400, partition_rows=100))
    vectors = np.random.default_rng(0).standard_normal((1200, 32)).astype(np.float32)

    def write(begin, end):
        ids = keys(end - begin, begin)
        store.upsert({**rows(ids), "vector": vectors[begin:end]})

    write(0, 300)
    assert store.ensure_index() == "none"
    write(300, 500)
    start = time.perf_counter()
    assert store.ensure_index() == "created"
    assert time.perf_counter() - start < 20
    assert store.ensure_index() == "none"
    write(500, 600)
    assert store.ensure_index() == "updated"
    assert store.ensure_index() == "none"
    write(600, 1200)  # 1200 rows in 5 partitions trained for 100 each: more than 2x
    assert store.ensure_index() == "rebuilt"
    assert sorted(index.name for index in store.videos.list_indices()) == ["id_idx", "uri_idx", "vector_ivf12"]
    hits = store.search(vectors[700], 3)
    assert hits.column("id")[0].as_py() == keys(1, 700)[0]


def test_key_columns_are_indexed_with_the_table_and_lookups_see_every_row(tmp_path):
    store = Store.open(str(tmp_path / "db"), dim=DIM, index=IndexConfig(min_rows=50, partition_rows=25))
    store.upsert(rows(keys(40)))
    store.ensure_index()
    assert store.videos.list_indices() == []  # below min_rows: scans are cheap
    store.upsert(rows(keys(20, 40)))
    store.ensure_index()
    indexes = {tuple(index.columns): index for index in store.videos.list_indices()}
    assert indexes[("id",)].index_type == indexes[("uri",)].index_type == "BTree"
    late = keys(5, 60)  # written after the indexes: found by the scan of unindexed rows, then by the index
    store.upsert({**rows(late), "uri": [f"/late/{i}.mp4" for i in range(5)]})
    for step in ("unindexed", "optimized"):
        assert store.indexed_keys([late[0], keys(1, 3)[0], "f" * 32]) == {late[0], keys(1, 3)[0]}, step
        assert store.video_ids(["/late/4.mp4"]) == {"/late/4.mp4": {late[4]}}, step
        assert store.ensure_index() == ("updated" if step == "unindexed" else "none")
    assert store.videos.index_stats("id_idx").num_unindexed_rows == 0


def test_replace_swaps_every_row_of_a_uri_in_one_commit(store):
    old, new = video_key("/v/a.mp4", 1, 1), video_key("/v/a.mp4", 2, 2)
    other = keys(1)
    moments = [moment_key(old, start, start + 10.0) for start in (0.0, 10.0, 20.0)]
    store.upsert({**rows([old, *moments], uri="/v/a.mp4"), "video_id": [old] * 4, "kind": ["video"] + ["moment"] * 3,
                  "start": [None, 0.0, 10.0, 20.0], "end": [None, 10.0, 20.0, 30.0]}, replace=True)
    store.upsert(rows(other, uri="/v/b.mp4"), replace=True)
    version = store.videos.version
    store.upsert(rows([new], uri="/v/a.mp4"), replace=True)
    assert store.videos.version == version + 1  # the delete and the insert are one commit
    table = store.videos.to_arrow().to_pylist()
    assert sorted((row["uri"], row["id"]) for row in table) == [("/v/a.mp4", new), ("/v/b.mp4", other[0])]
    assert store.video_ids(["/v/a.mp4", "/v/b.mp4", "/v/c.mp4"]) == {"/v/a.mp4": {new}, "/v/b.mp4": {other[0]}}


def test_an_error_removes_the_rows_of_its_uri_and_reconcile_removes_errors_beside_rows(store):
    ids = keys(3)
    store.upsert(rows(ids[:2], uri="/v/a.mp4"))
    store.record_errors([{"uri": "/v/a.mp4", "key": ids[2], "stage": "decode", "reason": "cannot decode: x"}])
    assert store.count() == 0 and store.failed_keys() == {"/v/a.mp4": ids[2]}
    # What a kill between a write's row commit and its error cleanup leaves: rows and an error.
    store.videos.add(store.rows(rows(ids[:1], uri="/v/a.mp4")))
    store.errors_table.add(pa.Table.from_pylist([{"uri": "/v/b.mp4", "key": None, "stage": "probe",
                                                  "reason": "no such file", "time": datetime.now(timezone.utc)}],
                                                schema=ERRORS_SCHEMA))
    assert store.reconcile() == 1
    assert store.failed_keys() == {"/v/b.mp4": None} and store.count() == 1


def test_prune_removes_only_what_the_listing_covers_and_lacks(store):
    store.upsert(rows(keys(1, 0), uri="/lib/kept.mp4"))
    store.upsert(rows(keys(1, 1), uri="/lib/gone.mp4"))
    store.upsert(rows(keys(1, 2), uri="/elsewhere/gone.mp4"))
    store.upsert({**rows([moment_key(keys(1, 1)[0], 0.0, 1.0)], uri="/lib/gone.mp4", kind="moment"),
                  "video_id": keys(1, 1), "start": [0.0], "end": [1.0]})
    store.record_errors([{"uri": "/lib/bad.mp4", "stage": "decode", "reason": "x"},
                         {"uri": "/elsewhere/bad.mp4", "stage": "decode", "reason": "x"}])
    pruned = store.prune(lambda uri: uri.startswith("/lib/"), keep={"/lib/kept.mp4"})
    assert pruned == {"videos": 1, "rows": 2, "errors": 1}
    assert sorted(store.videos.to_arrow().column("uri").to_pylist()) == ["/elsewhere/gone.mp4", "/lib/kept.mp4"]
    assert list(store.failed_keys()) == ["/elsewhere/bad.mp4"]
    assert store.delete_videos(keys(1, 2)) == 1 and store.count() == 1
