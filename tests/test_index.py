"""End to end: real local Ray, real LanceDB in a temp dir, real video files."""

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from centerclip import VideoEncoder
from centerclip.index.progress import format_summary, ordinal
from centerclip.search.searcher import Searcher
from centerclip.index.store import Store
from centerclip.commands import index
from centerclip.commands import search as search_cli
from centerclip.index import engine
from centerclip.index.job import IndexJob
from centerclip.index.pools import ClusterShape, NodeShape, pools
from tests.videos import truncate, write_video

MODEL = ["--model", "centerclip-test", "--frames", "4", "--batch-size", "4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_small):
    """Good synthetic videos, one long video (moments), and files that cannot be decoded."""
    folder = tmp_path_factory.mktemp("corpus")
    for video in sorted((synthetic_small / "videos").glob("*.mp4"))[:6]:
        shutil.copy(video, folder / video.name)
    write_video(folder / "long one.mp4", frames=250, fps=10, width=48, height=32)  # 25 s
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video")
    truncate(folder / "long one.mp4", folder / "cut.mp4", 0.3)
    return folder


def rows(db: str) -> list[dict]:
    return Store.open(db).videos.to_arrow().select(["id", "kind", "uri", "start", "end"]).to_pylist()


def test_folder_with_good_and_bad_videos_indexes_rows_and_errors(ray_session, corpus, tmp_path):
    db = str(tmp_path / "db")
    summary = index.main([str(corpus), "--db", db, *MODEL, "--moment-length", "10", "--moment-stride", "10",
                          "--moments-after", "20"])
    assert summary["found"] == 10 and summary["videos"] == 7 and summary["errors"] == 3
    assert summary["moments"] == 3  # 25 s in 10 s windows with a 10 s stride: 0-10, 10-20, 20-25
    table = rows(db)
    assert len(table) == 10 and len({row["id"] for row in table}) == 10
    long_moments = sorted((row["start"], row["end"]) for row in table if row["kind"] == "moment")
    assert [start for start, _ in long_moments] == [0.0, 10.0, 20.0]
    errors = {Path(row["uri"]).name: row for row in Store.open(db).errors().to_pylist()}
    assert set(errors) == {"empty.mp4", "notes.mp4", "cut.mp4"}
    assert all(row["stage"] == "decode" and row["reason"] for row in errors.values())

    again = index.main([str(corpus), "--db", db, *MODEL])
    assert again["already_indexed"] == 7 and again["videos"] == 0
    assert len(rows(db)) == 10 and len(Store.open(db).errors()) == 3

    # The same re-run from the command line, in a fresh interpreter: with nothing to encode it
    # loads neither Ray nor torch (the default job's re-run also loads torch, for its demo search).
    code = ("import sys; from centerclip.commands import index; "
            f"index.main({[str(corpus), '--db', db, *MODEL, '--json']!r}); "
            "print(sorted({'ray', 'torch'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert '"already_indexed": 7' in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_decode_options_index_the_same_rows_and_errors(ray_session, corpus, tmp_path):
    """--decode reaches the isolated decoders: the planned path indexes every video and moment,
    and the files that cannot be decoded still end in the errors table."""
    db = str(tmp_path / "db")
    summary = index.main([str(corpus), "--db", db, *MODEL, "--moments-after", "20",
                          "--decode", "threads=1,skip=unneeded,seek,snap=keyframe"])
    assert (summary["videos"], summary["moments"], summary["errors"]) == (7, 3, 3)
    errors = {Path(row["uri"]).name: row["stage"] for row in Store.open(db).errors().to_pylist()}
    assert errors == {"empty.mp4": "decode", "notes.mp4": "decode", "cut.mp4": "decode"}


def test_the_summary_counts_and_labels_as_the_progress_line_does(ray_session, corpus, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ["empty.mp4", "notes.mp4", *sorted(os.listdir(corpus))[-2:]]:
        shutil.copy(corpus / name, folder / name)
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("centerclip.index")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        summary = engine.run(IndexJob(inputs=(str(folder),), db=str(tmp_path / "db"), model="centerclip-test",
                                      frames=4, batch_size=4))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    progress = [line for line in lines if line.startswith("indexed ")]
    assert progress, lines
    progress = progress[-1]
    counted = re.fullmatch(r"indexed (\d+)/(\d+) videos \((\d+) moments\), (\d+) failed, ([\d.]+) videos/s since indexing began",
                           progress)
    assert counted, progress
    assert [int(counted[n]) for n in (1, 3, 4)] == [summary["videos"], summary["moments"], summary["failed_now"]]
    text = format_summary(summary)
    first = text.splitlines()[0]
    assert first.startswith(f"Indexed {summary['videos']} videos ({summary['moments']} moments), {summary['failed_now']} failed, in ")
    assert "videos/s over the whole run" in first and f"{summary['indexing_videos_per_s']:.1f} since indexing began" in first
    assert float(counted[5]) == pytest.approx(summary["indexing_videos_per_s"], rel=0.25)  # logged a moment apart


def test_a_rerun_over_an_unchanged_library_writes_nothing(ray_session, corpus, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    good = sorted(name for name in os.listdir(corpus) if name not in ("empty.mp4", "notes.mp4", "cut.mp4", "long one.mp4"))
    for name in good[:3] + ["empty.mp4"]:
        shutil.copy(corpus / name, folder / name)
    (folder / "notes.txt").write_text("a probe error: no video container")
    db = str(tmp_path / "db")
    first = index.main([str(folder), "--db", db, *MODEL])
    assert first["errors"] == 2
    store = Store.open(db)
    versions = store.videos.version, store.errors_table.version
    again = index.main([str(folder), "--db", db, *MODEL])
    assert (again["already_indexed"], again["videos"], again["errors"]) == (first["videos"], 0, 2)
    store = Store.open(db)
    assert (store.videos.version, store.errors_table.version) == versions  # neither table gained a version
    (folder / good[0]).write_text("replaced by text")  # what changed is written: its rows go, its error comes
    assert index.main([str(folder), "--db", db, *MODEL])["errors"] == 3
    store = Store.open(db)
    assert store.videos.version > versions[0] and store.errors_table.version > versions[1]


def test_default_run_indexes_a_sample_set_and_search_finds_the_captioned_video(ray_session, tmp_path):
    """The README's first command: the built-in model on a generated sample set it never saw."""
    summary = index.main(["--db", str(tmp_path / "db"), "--cache", str(tmp_path / "cache"), "--sample-videos", "10"])
    assert summary["videos"] == 10 and summary["errors"] == 0
    assert summary["moments"] > 0  # the sample set's clips of 6 s or more get 3 s moments
    search = summary["search"]
    assert search["expected"] in [Path(result["uri"]).name for result in search["results"]]
    assert Path(search["results"][search["rank"] - 1]["uri"]).name == search["expected"]
    sample = summary["sample"]
    assert sample["videos"] == 10 and sample["captions"] > 10 and 0 <= sample["R@1"] <= sample["R@5"] <= 100
    text = format_summary(summary)
    assert f"{search['expected']}, ranks {ordinal(search['rank'])} of 10" in text
    assert f"comes first for {sample['R@1']:.0f}% (R@1)" in text and "exact search" in text and "{" not in text
    db = str(tmp_path / "db")
    cli = search_cli.main([search["query"], "--db", db, "--k", "3", "--json"])  # the built-in model, as indexed
    assert search["expected"] in [Path(result.uri).name for result in cli]
    searcher = Searcher(Store.open(db), VideoEncoder.create())
    assert searcher.text(search["query"], k=3, where={"uri": "' OR '1'='1"}) == []
    assert len(searcher.text(search["query"], k=3, where={"kind": "video"})) == 3

    video = next(Path(result["uri"]) for result in search["results"])
    similar = search_cli.main(["--video", str(video), "--db", db, "--k", "4"])
    assert len(similar) == 4 and str(video) not in [result.uri for result in similar]
    with pytest.raises(SystemExit):
        search_cli.main(["--db", db])  # neither a query nor a video


# The driver, killed with SIGKILL by itself right after its third write: mid-run by construction,
# whatever the machine's speed (a kill from outside races a fast pipeline).
KILLED_AFTER_THREE_WRITES = """
import os, signal, sys
from centerclip import cli
from centerclip.commands import index
from centerclip.index import engine
write, writes = engine.write, []
def write_then_die(store, batch):
    counts = write(store, batch)
    writes.append(counts)
    if len(writes) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return counts
engine.write = write_then_die
cli.run(index.main, sys.argv[1:])
"""


def test_a_run_killed_midway_then_rerun_is_exact(ray_session, synthetic_small, tmp_path):
    db = str(tmp_path / "db")
    command = [sys.executable, "-c", KILLED_AFTER_THREE_WRITES, str(synthetic_small / "videos"), "--db", db, *MODEL,
               "--batch-size", "1"]  # one video per write
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    killed = subprocess.run(command, cwd=Path(__file__).parents[1], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    written = Store.open(db).count()
    assert 0 < written < 20, "the driver was killed mid-run"

    summary = index.main([str(synthetic_small / "videos"), "--db", db, *MODEL])
    assert summary["already_indexed"] == written
    table = rows(db)
    assert len(table) == 20 and len({row["id"] for row in table}) == 20


def test_pools_fit_the_smallest_node_and_grow_only_where_the_cluster_can_unless_flags_fix_them():
    two_small = pools(IndexJob(), ClusterShape(nodes=(NodeShape(1), NodeShape(1))))  # two 1-CPU workers
    assert two_small.decoder_cpus + two_small.encoder_cpus <= 1
    assert two_small.decoders == (1, 2) and two_small.encoders == (1, 2)  # one of each per node, no more
    assert two_small.strategy("decoders").initial_size == 2
    alone = pools(IndexJob(), ClusterShape())  # a 0-CPU head, workers to come: fits a 1-CPU node, grows
    assert alone.decoders == (1, None) and alone.encoders == (1, None) and alone.decoder_cpus + alone.encoder_cpus <= 1
    gpu = pools(IndexJob(gpus_per_encoder=1), ClusterShape())  # GPU workers to come
    assert gpu.encoders == (1, None) and gpu.encoder_gpus == 1 and gpu.encoder_cpus == 1
    assert gpu.strategy("encoders").max_size == float("inf")
    gpus = pools(IndexJob(gpus_per_encoder=1), ClusterShape(nodes=(NodeShape(4, 1), NodeShape(4, 1))))
    assert gpus.encoders == (1, 2) and gpus.encoder_cpus == 1 and gpus.decoders == (1, 12)
    local = pools(IndexJob(), ClusterShape(nodes=(NodeShape(2),)))  # one 2-CPU node
    assert local.encoders == (1, 1) and local.encoder_cpus == 1.5 and local.threads == 2 and local.decoders == (1, 1)
    big = pools(IndexJob(), ClusterShape(nodes=(NodeShape(32),)))
    assert big.encoder_cpus == 8 and big.encoders == (1, 3) and big.decoders == (1, 16)
    scaling = pools(IndexJob(), ClusterShape(nodes=(NodeShape(2),), node_types=(NodeShape(8),)))
    assert scaling.encoder_cpus == 1.5 and scaling.encoders == (1, None)  # sized for the smallest, grows onto new nodes
    fixed = pools(IndexJob(decoders=3, encoders=2, gpus_per_encoder=1), ClusterShape(nodes=(NodeShape(8, 4),)))
    assert fixed.decoders == (3, 3) and fixed.encoders == (2, 2)
    assert fixed.strategy("decoders").min_size == fixed.strategy("decoders").max_size == 3
    two = pools(IndexJob(encoders=2), ClusterShape(nodes=(NodeShape(2),)))  # two encoders fit beside a decoder
    assert two.encoders == (2, 2) and two.encoder_cpus == 0.75 and 2 * two.encoder_cpus + two.decoder_cpus <= 2
    assert pools(IndexJob(decoder_cpus=0.25), ClusterShape(nodes=(NodeShape(1),))).decoder_cpus == 0.25


def test_a_long_video_is_decoded_once_for_the_whole_clip_and_its_moments(corpus):
    from centerclip.index.decode_stage import DecodeVideos
    from centerclip.index.job import MomentConfig
    from centerclip.media.decoding import SamplingConfig

    stage = DecodeVideos(sampling=SamplingConfig(frames=4, size=32), moments=MomentConfig(10, 10, 20))
    calls = []
    call = stage.decoder.call
    stage.decoder.call = lambda path, fn, *args: calls.append(fn.__name__) or call(path, fn, *args)
    try:
        frames, starts, ends, thumbnails = stage.clips(str(corpus / "long one.mp4"))
    finally:
        stage.decoder.close()
    assert calls == ["index_clips"]
    assert len(thumbnails) == 4 and all(jpeg.startswith(b"\xff\xd8") for jpeg in thumbnails)
    assert frames.shape == (4, 4, 32, 32, 3) and starts == [None, 0.0, 10.0, 20.0] and ends == [None, 10.0, 20.0, 25.0]


def test_a_db_inside_the_listed_folder_is_not_an_input(ray_session, synthetic_small, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    for video in sorted((synthetic_small / "videos").glob("*.mp4"))[:2]:
        shutil.copy(video, folder / video.name)
    job = IndexJob(inputs=(str(folder),), db=str(folder / "index.lancedb"), model="centerclip-test", frames=4)
    first = engine.run(job)
    assert (first["found"], first["videos"], first["errors"]) == (2, 2, 0)
    again = engine.run(job)  # the db's files, written by the first run, are not listed as failed inputs
    assert (again["found"], again["already_indexed"], again["errors"]) == (2, 2, 0)


def test_a_file_that_changes_while_it_is_indexed_is_tried_again_next_run(ray_session, corpus, tmp_path):
    from centerclip.index.batching import sources_batch
    from centerclip.index.decode_stage import DecodeVideos
    from centerclip.index.listing import list_inputs
    from centerclip.media.decoding import SamplingConfig

    folder = tmp_path / "growing"
    folder.mkdir()
    for name in ["long one.mp4", sorted(os.listdir(corpus))[-1]]:
        shutil.copy(corpus / name, folder / name)
    listed = list_inputs([str(folder)]).sources
    with open(folder / "long one.mp4", "ab") as file:  # still being written after it was listed
        file.write(b"\0" * 1000)
    stage = DecodeVideos(sampling=SamplingConfig(frames=4, size=32))
    try:
        parts = list(stage(sources_batch(listed)))
    finally:
        stage.decoder.close()
    errors = {Path(uri).name: error for part in parts for uri, error in zip(part["uri"], part["error"])}
    assert errors[sorted(os.listdir(corpus))[-1]] == ""
    assert errors["long one.mp4"].startswith("changed while indexing: listed at ") and "tried again on the next run" in errors["long one.mp4"]

    # In a whole run: an error row under the listed version's key, so the next run tries the file again.
    db = str(tmp_path / "db")
    from centerclip.index import engine as indexing

    from centerclip.model.registry import model_shape

    store = Store.open(db, dim=model_shape("centerclip-test").embed_dim)
    [growing] = [source for source in listed if source.uri.endswith("long one.mp4")]
    store.record_errors([{"uri": growing.uri, "key": growing.key, "stage": "decode", "reason": errors["long one.mp4"]}])
    again = indexing.run(IndexJob(inputs=(str(folder),), db=db, model="centerclip-test", frames=4, batch_size=4))
    assert again["failed_before"] == 0 and again["videos"] == 2 and again["errors"] == 0


def test_a_decoder_call_ships_its_videos_in_parts_of_a_block_each_video_whole(corpus):
    from centerclip.index.decode_stage import DecodeVideos
    from centerclip.index.job import MomentConfig
    from centerclip.index.batching import sources_batch
    from centerclip.index.listing import Source
    from centerclip.media.decoding import SamplingConfig

    uris = [str(corpus / name) for name in ("long one.mp4", "notes.mp4", sorted(p.name for p in corpus.glob("video*.mp4"))[0])]
    batch = sources_batch([Source(uri, key) for uri, key in zip(uris, "abc")])
    clip_bytes = 4 * 32 * 32 * 3
    sampling = SamplingConfig(frames=4, size=32)
    one_part = DecodeVideos(sampling=sampling, moments=MomentConfig(10, 10, 20))
    parted = DecodeVideos(sampling=sampling, moments=MomentConfig(10, 10, 20), block_bytes=2 * clip_bytes)
    try:
        [whole] = list(one_part(batch))
        parts = list(parted(batch))
    finally:
        one_part.decoder.close()
        parted.decoder.close()
    # The long video (4 clips) fills a part alone; the failed file and the short video (1 clip) end the call together.
    assert [list(part["key"]) for part in parts] == [["a"], ["b", "c"]]
    assert [len(frames) for frames in whole["frames"]] == [4, 0, 1] and whole["error"][1] and not whole["error"][2]
    for name in whole:
        joined = [value for part in parts for value in part[name]]
        assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(whole[name], joined)), name


def test_videos_reach_the_encoder_in_blocks_and_the_table_whole(ray_session, corpus, tmp_path, monkeypatch):
    # A block of one byte: every decoded video fills a block alone, so each encoder call holds one
    # (8 in one call without blocks), and Ray Data cuts every call's output into blocks of one row,
    # so the long video's 4 rows reach the driver apart: they must still be written together.
    import ray.data

    monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", 1)
    write, written = engine.write, []  # the videos of each write that decoded
    monkeypatch.setattr(engine, "write", lambda store, batch: written.append(sorted(set(batch["video_id"][batch["error"] == ""])))
                        or write(store, batch))
    db = str(tmp_path / "db")
    summary = index.main([str(corpus), "--db", db, *MODEL, "--batch-size", "8"])
    assert summary["videos"] == 7 and summary["errors"] == 3 and summary["moments"] == 3
    assert sum(map(len, written)) == 7 and max(map(len, written)) == 1
    table = rows(db)
    assert len(table) == 10 and sum(row["kind"] == "moment" for row in table) == 3


def test_whole_videos_gathers_a_videos_rows_from_any_batches_once_each():
    from centerclip.index.batching import WholeVideos

    def batch(*rows):  # (id, video_id, video_rows)
        ids, videos, counts = zip(*rows)
        return {"id": np.array(ids, dtype=object), "video_id": np.array(videos, dtype=object), "video_rows": np.array(counts)}

    gathered = WholeVideos()
    assert list(gathered.add(batch(("a", "a", 1), ("b", "b", 3), ("b@0", "b", 3)))["id"]) == ["a"]
    assert list(gathered.add(batch(("c", "c", 2), ("b@0", "b", 3)))["id"]) == []  # b@0 again: still 2 of b's 3
    assert sorted(gathered.add(batch(("b@1", "b", 3), ("c@0", "c", 2)))["id"]) == ["b", "b@0", "b@1", "c", "c@0"]
    assert gathered.left() is None
    gathered.add(batch(("d", "d", 2)))
    assert list(gathered.left()["id"]) == ["d"]
