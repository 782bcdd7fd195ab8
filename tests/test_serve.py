"""The search service over real HTTP: real Ray Serve on loopback, a real LanceDB index of generated
videos written by the real indexer, the built-in model; and the page in a real headless Chromium."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from lancedb.expr import col, lit
from PIL import Image

from centerclip import cli
from centerclip.datasets.synthetic import render, write_video
from centerclip.datasets.synthetic_scenes import BACKGROUNDS, plan
from centerclip.index.store import Store
from centerclip.commands import index
from centerclip.commands import serve as serve_command
from centerclip.index.job import IndexJob
from centerclip.index.sample import sample_inputs
from centerclip.search import service as search_service
from tests.serving import free_port, get, get_json, running, search, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The README's sample set (10 videos, seed 1) and one long video: the captioned video's scene
    between two stretches of its empty background, each as long as the scene, so the middle
    moment is exactly the described scene. Returns (sample folder, long video, caption, file
    name the caption describes, scene length in seconds)."""
    cache = tmp_path_factory.mktemp("cache")
    sample = sample_inputs(IndexJob(cache=str(cache), sample_videos=10))
    inputs, caption, expected = sample.inputs, sample.query, sample.expected
    scene = next(video.scene for video in plan(10, seed=1) if f"{video.video_id}.mp4" == expected)
    frames = render(scene, 112, 10)
    padding = np.broadcast_to(np.array(BACKGROUNDS[scene.background], np.uint8), frames.shape)
    long_video = tmp_path_factory.mktemp("long") / "long take.mp4"
    write_video(np.concatenate([padding, frames, padding]), long_video, fps=10)
    return Path(inputs[0]), long_video, caption, expected, scene.seconds


@pytest.fixture(scope="module")
def service(ray_session, corpus, tmp_path_factory):
    """Index the corpus with the built-in model, serve it, yield (base URL, db); Serve stops after."""
    from ray import serve

    folder, long_video, _, _, seconds = corpus
    db = str(tmp_path_factory.mktemp("db"))
    summary = index.main([str(folder), str(long_video.parent), "--db", db, "--moment-length", str(seconds),
                          "--moment-stride", str(seconds), "--moments-after", str(3 * seconds - 0.5)])
    assert summary["videos"] == 11 and summary["moments"] == 3 and summary["errors"] == 0
    config = search_service.ServeConfig(db=db, port=free_port(), refresh=0.2, max_replicas=1, cpus=0.25)
    url = search_service.start(config)
    yield url.rstrip("/"), db
    serve.shutdown()


def test_health_counts_the_rows(service):
    status, body = get_json(service[0], "/api/health")
    assert status == 200 and body == {"status": "ok", "rows": 14}


def test_search_finds_the_captioned_video_and_its_moment(service, corpus):
    base, _ = service
    _, long_video, caption, expected, seconds = corpus
    results = search(base, caption, k=5)
    assert len(results) == 5 and len({result["video_id"] for result in results}) == 5
    assert set(results[0]) == {"video_id", "uri", "name", "score", "start", "end", "thumbnail", "media"}
    names = [Path(result["uri"]).name for result in results]
    assert expected in names[:3] and long_video.name in names[:3]
    long = results[names.index(long_video.name)]
    assert (long["start"], long["end"]) == (seconds, 2 * seconds)  # the described scene, not the padding
    assert long["media"] == f"/api/media/{long['video_id']}" and long["thumbnail"].startswith("/api/thumbnail/")
    assert long["thumbnail"] != f"/api/thumbnail/{long['video_id']}"  # the moment's own picture
    assert [result["score"] for result in results] == sorted((result["score"] for result in results), reverse=True)


def test_kind_filters_videos_and_moments(service, corpus):
    base, _ = service
    caption = corpus[2]
    assert all(result["start"] is None for result in search(base, caption, k=20, kind="video"))
    moments = search(base, caption, k=20, kind="moment")
    assert len(moments) == 1 and moments[0]["start"] is not None  # one long video holds every moment


def test_similar_returns_other_videos(service, corpus):
    base, _ = service
    target = next(result for result in search(base, corpus[2], k=3) if Path(result["uri"]).name == corpus[3])
    status, body = get_json(base, f"/api/similar?id={target['video_id']}&k=4")
    assert status == 200 and len(body["results"]) == 4
    assert target["video_id"] not in {result["video_id"] for result in body["results"]}


def test_thumbnails_are_the_stored_jpegs(service, corpus):
    base, db = service
    rows = {row["id"]: row for row in Store.open(db).videos.to_arrow().select(["id", "kind", "thumbnail"]).to_pylist()}
    assert len(rows) == 14 and all(row["thumbnail"] for row in rows.values())
    for row_id, row in rows.items():
        status, headers, body = get(base, f"/api/thumbnail/{row_id}")
        assert status == 200 and headers["content-type"] == "image/jpeg" and body == row["thumbnail"]
        image = Image.open(io.BytesIO(body))
        assert image.format == "JPEG" and max(image.size) <= 224


def test_media_honours_ranges_with_the_exact_bytes(service, corpus):
    base, _ = service
    long_video = corpus[1]
    data = long_video.read_bytes()
    video_id = next(r["video_id"] for r in search(base, corpus[2], k=3) if Path(r["uri"]).name == long_video.name)
    path = f"/api/media/{video_id}"
    status, headers, body = get(base, path)
    assert (status, body, headers["content-type"], headers["accept-ranges"]) == (200, data, "video/mp4", "bytes")
    assert headers["content-security-policy"] == "sandbox; default-src 'none'" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == "inline; filename*=utf-8''long%20take.mp4"  # Starlette's RFC 6266 form
    status, head_headers, head_body = get(base, path, method="HEAD")  # as GET, without the body
    assert (status, head_body) == (200, b"")
    assert {key: head_headers[key] for key in headers if key not in ("date", "x-request-id")} == {
        key: headers[key] for key in headers if key not in ("date", "x-request-id")}
    for condition in [{"If-None-Match": headers["etag"]}, {"If-Modified-Since": headers["last-modified"]}]:
        status, _, body = get(base, path, condition)
        assert (status, body) == (304, b""), condition
    assert get(base, path, {"If-None-Match": '"other"'})[0] == 200
    for header, start, end in [("bytes=100-1099", 100, 1099), ("bytes=1000-", 1000, len(data) - 1),
                               ("bytes=-500", len(data) - 500, len(data) - 1),
                               (f"bytes=10-{len(data) + 99}", 10, len(data) - 1)]:
        status, headers, body = get(base, path, {"Range": header})
        assert status == 206, header
        assert body == data[start:end + 1] and headers["content-length"] == str(end - start + 1)
        assert headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    status, headers, _ = get(base, path, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("path", [
    "/api/media/../../../../etc/passwd", "/api/media/..%2F..%2F..%2Fetc%2Fpasswd", "/api/media/%2Fetc%2Fpasswd",
    "/api/media//etc/passwd", "/api/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/thumbnail/..%2F..%2Fpyproject.toml",
    "/api/media/" + "0" * 32, "/api/media/" + "Z" * 32, "/api/thumbnail/" + "0" * 32 + "%2F..",
    "/static/..%2F..%2F..%2Fpyproject.toml", "/static/../app.py", "/etc/passwd", "/api/media/"])
def test_paths_in_requests_are_not_served(service, path):
    status, headers, body = get(service[0], path)
    assert status == 404 and headers["content-type"] == "application/json" and "error" in json.loads(body)
    assert b"root:" not in body


@pytest.mark.parametrize("query, status, message", [
    ({"q": ""}, 400, "empty"), ({"q": "   "}, 400, "empty"), ({}, 400, "empty"),
    ({"q": "a red circle " * 80}, 400, "at most 1000"), ({"q": "x", "k": "0"}, 400, "k must"),
    ({"q": "x", "k": "101"}, 400, "k must"), ({"q": "x", "k": "ten"}, 400, "k must"), ({"q": "x", "k": "-1"}, 400, "k must"),
    ({"q": "x", "kind": "clip"}, 400, "kind must"), ({"q": "x", "kind": "video' OR '1'='1"}, 400, "kind must")])
def test_bad_queries_get_a_json_message(service, query, status, message):
    code, body = get_json(service[0], "/api/search?" + urllib.parse.urlencode(query))
    assert code == status and message in body["error"]


@pytest.mark.parametrize("query", [{}, {"id": ""}, {"id": "0" * 32}, {"id": "' OR 1=1 --"}, {"id": "a" * 5000}])
def test_similar_to_an_unknown_id_is_404(service, query):
    code, body = get_json(service[0], "/api/similar?" + urllib.parse.urlencode(query))
    assert code == 404 and "no indexed video" in body["error"]


def test_rows_written_while_serving_show_up(service):
    base, db = service
    store = Store.open(db)
    row = store.videos.to_arrow().slice(0, 1).to_pylist()[0]
    extra = {**{name: [value] for name, value in row.items()}, "id": ["f" * 32], "video_id": ["f" * 32],
             "kind": ["video"], "start": [None], "end": [None], "thumbnail": [None]}
    store.upsert(extra)
    try:
        deadline = time.monotonic() + 10
        while get_json(base, "/api/health")[1]["rows"] != 15 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get_json(base, "/api/health")[1]["rows"] == 15
        status, headers, body = get(base, "/api/thumbnail/" + "f" * 32)  # a row without a thumbnail
        assert status == 200 and headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(body)).size == (224, 126)
    finally:
        store.videos.delete(col("id") == lit("f" * 32))


def test_the_page_and_its_assets_are_served_locally(service):
    base, _ = service
    status, headers, body = get(base, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert b'<script src="/static/app.js"' in body and b"http" not in body.replace(b"http-equiv", b"")
    for asset, kind in [("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")]:
        status, headers, body = get(base, asset)
        assert status == 200 and headers["content-type"].startswith(kind) and b"https://" not in body


def test_without_a_token_only_local_host_names_are_answered(service):
    status, _, body = get(service[0], "/api/health", {"Host": "attacker.example"})
    assert status == 403 and b"no token" in body


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "128.0.0.1"])
def test_other_addresses_need_a_token(service, capsys, monkeypatch, host):
    monkeypatch.delenv("CENTERCLIP_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(serve_command.main, ["--db", service[1], "--host", host])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "token" in error and len(error.strip().splitlines()) == 1


def test_the_launcher_loads_no_torch(tmp_path):
    # torch and open_clip load in the replicas only: the launcher stays small and --help is quick
    # (0.1 s here against 13 s when it loaded the model's stack).
    probe = ("import sys\nfrom centerclip.commands import serve\ntry:\n    serve.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "import centerclip.search.service\n"
             "sys.exit(sorted(name for name in ('torch', 'open_clip') if name in sys.modules) or None)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "") and "--host" in done.stdout


def test_a_table_of_another_model_is_refused_before_serving(tmp_path, capsys):
    Store.open(str(tmp_path / "db"), dim=32)  # the built-in model embeds into 128 dims
    with pytest.raises(SystemExit) as exit_info:
        cli.run(serve_command.main, ["--db", str(tmp_path / "db"), "--port", str(free_port())])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "embeds into 128 dims but the table holds 32-d vectors" in error
    assert len(error.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="embeds into 128 dims"):  # serve run / serve deploy refuse it too
        search_service.build({"db": str(tmp_path / "db")})


def test_the_token_is_checked_on_every_request(service):
    from centerclip.search.web.app import create_app

    async def embed(query: str) -> np.ndarray:
        return np.ones(Store.open(service[1]).dim, np.float32)

    with running(create_app(Store.open(service[1]), embed, token="s3cret")) as base:
        for path in ["/", "/api/health", "/api/search?q=x", "/api/thumbnail/" + "0" * 32, "/static/app.js"]:
            assert get(base, path)[0] == 401
            assert get(base, path, {"Authorization": "Bearer wrong"})[0] == 401
            assert get(base, path, {"Cookie": "centerclip_token=wrong"})[0] == 401
        assert get(base, "/api/health", {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(base, "/api/search?q=x&k=2", {"Authorization": "Bearer s3cret"})[0] == 200
        status, headers, _ = get(base, "/?q=red&token=s3cret")
        assert status == 303 and headers["location"] == "/?q=red"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        assert get(base, "/api/health", {"Cookie": cookie})[0] == 200


def test_media_serves_a_file_whose_name_is_not_utf8(ray_session, corpus, tmp_path):
    # Such a name is stored as a percent-encoded file:// uri, which pyarrow cannot open.
    from centerclip.search.web.app import create_app

    folder = tmp_path / "videos"
    folder.mkdir()
    name = os.path.join(os.fsencode(folder), b"caf\xe9.mp4")
    shutil.copyfile(corpus[1], name)
    db = str(tmp_path / "db")
    assert index.main([str(folder), "--db", db])["videos"] == 1
    store = Store.open(db)
    row = store.videos.search().where(col("kind") == lit("video")).select(["video_id", "uri"]).limit(1).to_arrow().to_pylist()[0]
    assert row["uri"].startswith("file://") and row["uri"].endswith("caf%E9.mp4")

    async def embed(query: str) -> np.ndarray:
        return np.ones(store.dim, np.float32)

    with running(create_app(store, embed)) as base:
        status, headers, body = get(base, f"/api/media/{row['video_id']}")
        assert (status, headers["content-type"], body) == (200, "video/mp4", corpus[1].read_bytes())
        status, _, body = get(base, f"/api/media/{row['video_id']}", {"Range": "bytes=10-19"})
        assert (status, body) == (206, corpus[1].read_bytes()[10:20])


def test_serve_run_builder_takes_config_fields(service):
    assert search_service.build({"db": service[1], "max_replicas": "1", "refresh": "0.5"}) is not None
    with pytest.raises(ValueError, match="unknown argument 'colour'"):
        search_service.build({"db": service[1], "colour": "red"})


# ---------------------------------------------------------------------------- a real browser

def test_browser_searches_plays_the_moment_and_finds_similar(service, corpus, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, _ = service
    _, long_video, caption, expected, seconds = corpus
    browser.get(base + "/")
    box = browser.find_element(By.ID, "q")
    assert browser.switch_to.active_element == box  # the search box has the focus: type straight away
    box.send_keys(caption, Keys.ENTER)
    wait_for(browser, "document.querySelectorAll('#results .result').length >= 3")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)["q"] == [caption]
    names = [node.text for node in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]
    assert expected in names[:3] and long_video.name in names[:3]
    assert wait_for(browser, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")

    card = browser.find_elements(By.CSS_SELECTOR, "#results .result")[names.index(long_video.name)]
    assert f"{seconds}.0" in card.find_element(By.CSS_SELECTOR, ".meta").text  # its time range
    card.find_element(By.CSS_SELECTOR, ".play").click()
    wait_for(browser, f"!document.getElementById('video').paused && document.getElementById('video').currentTime > {seconds} + 0.3")
    position = browser.execute_script("return document.getElementById('video').currentTime")
    assert seconds <= position < 2 * seconds, position  # from the moment's start, not from 0
    screenshot = Path(os.environ.get("CENTERCLIP_SCREENSHOT") or tmp_path / "serve.png")  # docs/serve.png comes from here
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # It stops at the moment's end.
    wait_for(browser, "document.getElementById('video').paused", timeout=seconds + 15)
    assert browser.execute_script("return document.getElementById('video').currentTime") <= 2 * seconds + 0.5

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_for(browser, "document.getElementById('player').hidden")
    card = browser.find_elements(By.CSS_SELECTOR, "#results .result")[names.index(expected)]
    card.find_element(By.CSS_SELECTOR, ".similar").click()
    wait_for(browser, "location.search.includes('similar=') && document.querySelectorAll('#results .result').length > 0")
    assert expected not in [node.text for node in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]
    assert "similar to" in browser.find_element(By.ID, "status").text


def test_browser_shows_empty_and_error_states(service, corpus, browser):
    from selenium.webdriver.common.by import By

    base, _ = service
    long_id = next(r["video_id"] for r in search(base, corpus[2], k=3) if Path(r["uri"]).name == corpus[1].name)
    browser.get(f"{base}/?similar={long_id}&kind=moment")  # every moment is the long video's own
    wait_for(browser, "document.getElementById('status').textContent.startsWith('No videos')")
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []
    browser.get(f"{base}/?q={'red+' * 300}")  # a shared link may hold more than the box takes
    status = wait_for(browser, "document.getElementById('status').classList.contains('error') && "
                               "document.getElementById('status').textContent")
    assert status.startswith("Search failed: the query is 1199 characters long")
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []


# ---------------------------------------------------------------------------- serve.py itself

def _haproxies() -> set[int]:
    """Ids of the haproxy processes running now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.path.basename((entry / "cmdline").read_bytes().split(b"\0")[0]) == b"haproxy":
                    found.add(int(entry.name))
            except OSError:  # ended while we looked
                pass
    return found


@pytest.mark.skipif(not shutil.which("haproxy"), reason="needs the Debian package haproxy (apt-get install -y haproxy)")
def test_serve_py_through_haproxy_stops_cleanly_on_sigterm(service, tmp_path):
    # serve.py as a user runs it: its own Ray (started from the project's folder, whatever the
    # caller's), HAProxy in front of the replica; SIGTERM to its process group stops everything.
    (tmp_path / "fastapi.py").write_text("raise SystemExit('the caller folder is on the import path')\n")
    haproxies = _haproxies()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    launcher = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "serve.py"), "--db", service[1], "--port",
                                 str(free_port()), "--ingress", "haproxy", "--cpus", "0.25", "--max-replicas", "1"],
                                cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 180
        while "is serving" not in line and time.monotonic() < deadline and launcher.poll() is None:
            line = launcher.stdout.readline()
        assert "is serving" in line, launcher.stderr.read() if launcher.poll() is not None else line
        base = line.split(" at ")[1].split()[0].rstrip("/")
        status, body = get_json(base, "/api/health")
        assert (status, body["rows"]) == (200, 14)
        assert len(search(base, "a red circle", k=3)) == 3
        assert _haproxies() - haproxies  # the answers came through an HAProxy of its own
        os.killpg(launcher.pid, signal.SIGTERM)
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0 and "stopping the service" in out
    assert "Traceback" not in err, err[-3000:]
    deadline = time.monotonic() + 15
    while _haproxies() - haproxies and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _haproxies() - haproxies
