"""Inputs and the index on an S3-compatible server: moto in server mode on loopback, reached over
HTTP with only the standard AWS variables set, as a user reaches AWS. The objects are put there
with boto3, a client the project does not use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from lancedb.expr import col, lit

from centerclip.index import engine as indexing
from centerclip.index.job import IndexJob
from centerclip.index.store import Store
from centerclip.search.searcher import Searcher
from tests.serving import free_port, get, running, search

ROOT = Path(__file__).resolve().parents[1]
# Keys that URL syntax would break: a space, non-ASCII, %, #, +, =, ?, nested prefixes.
ODD_KEYS = ["Holiday 2019/Café.mp4", "100% real.mp4", "lib/hash#1.mp4", "a+b=c.mp4", "what?.mp4", "日本/動画.mp4",
            "deep/er/still/x=1&y=2.mp4"]
# Keys S3 holds that object_store (the client of obstore and LanceDB) cannot address.
UNADDRESSABLE = ["twice//slash.mp4", "../up.mp4"]
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
JOB = {"model": "centerclip-test", "frames": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def endpoint():
    """moto_server on a free loopback port, stopped by its pid."""
    server_binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    server = subprocess.Popen([server_binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def aws(endpoint, monkeypatch):
    """Only the standard variables, pointing at the server."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in {**ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    return endpoint


def client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


def make_bucket(name: str):
    s3 = client()
    s3.create_bucket(Bucket=name)
    return s3


def state(db: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """uri -> its video row, uri -> its error row."""
    store = Store.open(db)
    videos = store.videos.search().where(col("kind") == lit("video")).select(["id", "uri"]).limit(None).to_arrow().to_pylist()
    return {row["uri"]: row for row in videos}, {row["uri"]: row for row in store.errors().to_pylist()}


def test_an_s3_library_of_odd_keys_is_indexed_searched_served_and_pruned(ray_session, aws, synthetic_small):
    s3 = make_bucket("library")
    make_bucket("index")
    videos = sorted((synthetic_small / "videos").glob("*.mp4"))
    for key, video in zip(ODD_KEYS, videos):
        s3.put_object(Bucket="library", Key=key, Body=video.read_bytes())
    s3.put_object(Bucket="library", Key="lib/hash", Body=videos[7].read_bytes())  # what "#1.mp4" cut off would name
    s3.put_object(Bucket="library", Key="notes.txt", Body=b"not a video")
    s3.put_object(Bucket="library", Key="broken.mp4", Body=b"\x00\x00\x00\x18ftypmp42 but nothing after")
    for key in UNADDRESSABLE:
        s3.put_object(Bucket="library", Key=key, Body=videos[0].read_bytes())
    db = "s3://index/centerclip db"
    summary = indexing.run(IndexJob(inputs=("s3://library/",), db=db, **JOB))
    assert summary["videos"] == len(ODD_KEYS) + 1 and summary["errors"] == 2 + len(UNADDRESSABLE), summary

    rows, errors = state(db)
    every = {f"s3://library/{key}" for key in [*ODD_KEYS, "lib/hash", "notes.txt", "broken.mp4", *UNADDRESSABLE]}
    assert set(rows) | set(errors) == every and not set(rows) & set(errors)  # each key once, stored as S3 holds it
    assert errors["s3://library/notes.txt"]["reason"] == "unknown extension and not a video container"
    assert errors["s3://library/broken.mp4"]["stage"] == "decode"
    assert all(errors[f"s3://library/{key}"]["reason"].startswith("its key has an empty, '.' or '..' part")
               for key in UNADDRESSABLE)

    store = Store.open(db)
    searcher = Searcher(store, None)
    hash_key = "s3://library/lib/hash#1.mp4"
    vector = np.asarray(store.videos.search().where(col("id") == lit(rows[hash_key]["id"])).select(["vector"])
                        .limit(1).to_arrow().column("vector")[0].as_py(), np.float32)
    [found] = searcher.vector(vector, k=1, where={"uri": hash_key})  # the stored form is the form a filter takes
    assert found.uri == hash_key and found.video_id == rows[hash_key]["id"]
    assert searcher.vector(vector, k=1)[0].uri == hash_key

    async def embed(query: str) -> np.ndarray:
        return vector

    body = videos[ODD_KEYS.index("Holiday 2019/Café.mp4")].read_bytes()
    with running(indexing_app(store, embed)) as base:
        media = f"/api/media/{rows['s3://library/Holiday 2019/Café.mp4']['id']}"
        status, headers, whole = get(base, media)
        assert (status, headers["content-type"], whole) == (200, "video/mp4", body)
        status, headers, part = get(base, media, {"Range": "bytes=100-199"})
        assert (status, part, headers["content-range"]) == (206, body[100:200], f"bytes 100-199/{len(body)}")
        assert get(base, media, method="HEAD")[0] == 200
        # The API takes a uri back as it gave it: only that file's rows.
        [hit] = search(base, "anything", uri=hash_key)
        assert (hit["uri"], hit["name"], hit["video_id"]) == (hash_key, "hash#1.mp4", rows[hash_key]["id"])

    # The store changes: one object deleted, one rewritten with another video, one added.
    s3.delete_object(Bucket="library", Key="100% real.mp4")
    s3.put_object(Bucket="library", Key="a+b=c.mp4", Body=videos[8].read_bytes())
    s3.put_object(Bucket="library", Key="new one.mp4", Body=videos[9].read_bytes())
    again = indexing.run(IndexJob(inputs=("s3://library/",), db=db, prune=True, **JOB))
    assert again["pruned"]["videos"] == 1 and again["videos"] == 2 and again["already_indexed"] == len(ODD_KEYS) - 1
    after, errors_after = state(db)
    assert set(after) | set(errors_after) == every - {"s3://library/100% real.mp4"} | {"s3://library/new one.mp4"}
    assert after["s3://library/a+b=c.mp4"]["id"] != rows["s3://library/a+b=c.mp4"]["id"]  # its rows were replaced
    assert store.count() == len(after)  # no moments here: one row per video, no second generation

    untouched = indexing.run(IndexJob(inputs=("s3://library/",), db=db, **JOB))
    assert untouched["videos"] == 0 and untouched["already_indexed"] == len(after)


def indexing_app(store, embed):
    from centerclip.search.web.app import create_app

    return create_app(store, embed)


def cli(*argv: str, env: dict[str, str], script: str = "index.py") -> subprocess.CompletedProcess:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *argv], env={**clean, **env},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_store_errors_are_one_line_naming_the_bucket(aws, tmp_path):
    make_bucket("present")
    env = {**ENV, "AWS_ENDPOINT_URL": aws}
    folder = tmp_path / "empty"
    folder.mkdir()
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["s3://no-such-bucket/videos/", "--db", str(tmp_path / "db")], env, "no such bucket s3://no-such-bucket"),
        ([str(folder), "--db", "s3://no-such-bucket/db"], env, "no such bucket s3://no-such-bucket"),
        (["s3://present/", "--db", str(tmp_path / "db2")], {**env, "AWS_ENDPOINT_URL": closed},
         f"cannot reach {closed}"),
    ]
    for argv, environment, says in cases:
        began = time.monotonic()
        done = cli(*argv, env=environment)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], (argv, done.stderr[-2000:])
        assert lines[0].startswith("index.py: ") and time.monotonic() - began < 60
    began = time.monotonic()
    done = cli("a red circle", "--db", "s3://no-such-bucket/db", env=env, script="search.py")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "search.py: error: s3://no-such-bucket/db: no such bucket s3://no-such-bucket"], done.stderr[-2000:]
    assert time.monotonic() - began < 20  # before the model loads
