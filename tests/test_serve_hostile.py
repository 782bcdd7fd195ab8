"""The search service against a hostile library: names a file system allows and a page gets wrong,
containers the host's mimetypes table gets wrong, and a video that is also an HTML page. Indexed
by the real indexer, served by the app on uvicorn (tests/serving.py), read over HTTP and in a real
headless Chromium."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from lancedb.expr import col, lit

from centerclip.commands import index
from centerclip.index.store import Store
from tests.serving import get, running, search, wait_for
from tests.videos import write_video as write_striped


# Names a file system allows and a page gets wrong: percent signs, escapes that decode to ../,
# URL delimiters, markup, bytes that are not UTF-8; and a video named .html that is also a page.
HOSTILE_NAMES = [b"100%.mp4", b"%2e%2e%2f.mp4", b"a #1?x=y&z.mp4", b"caf\xe9 %FF.mp4",
                 b"<img src=x onerror=\"document.title='owned'\">.mp4"]
POLYGLOT = b"<!doctype html><html><script>document.title='owned'</script><body>owned</body></html>"
CONTAINERS = {"clip.ts": ("mpegts", "video/mp2t"), "phone.3gp": ("3gp", "video/3gpp"),
              "film.mkv": ("matroska", "video/x-matroska"), "old.avi": ("avi", "video/x-msvideo")}


@pytest.fixture(scope="module")
def hostile(ray_session, tmp_path_factory):
    """A library of hostile names and containers, indexed by the real indexer and served by the app on
    uvicorn; yields (base URL, {file name bytes: result}, folder, store)."""
    from centerclip.search.web.app import create_app

    folder = tmp_path_factory.mktemp("hostile")
    for name in HOSTILE_NAMES:
        write_striped(Path(os.fsdecode(os.path.join(os.fsencode(folder), name))), frames=20, width=96, height=64)
    for name, (container, _) in CONTAINERS.items():
        write_striped(folder / name, frames=20, width=96, height=64, container=container,
                      codec="mpeg4" if container == "avi" else "libx264")
    page = write_striped(folder / "page.html", frames=20, width=96, height=64, container="mp4")
    page.write_bytes(page.read_bytes() + POLYGLOT)  # still a valid MP4, and it parses as a page too
    db = str(tmp_path_factory.mktemp("hostile-db"))
    summary = index.main([str(folder), "--db", db])
    assert (summary["videos"], summary["errors"]) == (len(HOSTILE_NAMES) + len(CONTAINERS) + 1, 0), summary
    store = Store.open(db)
    rows = store.videos.search().where(col("kind") == lit("video")).select(["video_id", "uri"]).limit(100).to_arrow().to_pylist()

    async def embed(query: str) -> np.ndarray:  # every row matches: the page shows the whole library
        return np.ones(store.dim, np.float32)

    with running(create_app(store, embed)) as base:
        by_name = {}
        for result in search(base, "anything", k=50):
            by_name[os.path.basename(os.fsencode(index_path(result["uri"])))] = result
        assert len(by_name) == len(rows)
        yield base, by_name, folder, store


def index_path(uri: str) -> str:
    from centerclip.media.sources import path_from_uri

    return path_from_uri(uri) or uri


def test_media_types_come_from_the_container_not_the_name(hostile):
    base, rows, folder, _ = hostile
    for name, (_, kind) in {**CONTAINERS, "page.html": (None, "video/mp4"), "100%.mp4": (None, "video/mp4")}.items():
        status, headers, body = get(base, rows[name.encode()]["media"])
        assert (status, headers["content-type"]) == (200, kind), name
        assert headers["content-security-policy"] == "sandbox; default-src 'none'" and headers["x-content-type-options"] == "nosniff"
        assert body == (folder / name).read_bytes()
        status, head, body = get(base, rows[name.encode()]["media"], method="HEAD")
        assert (status, body, head["content-type"], head["content-length"]) == (200, b"", kind, str((folder / name).stat().st_size))


def test_a_file_that_stops_being_a_video_is_served_as_bytes(hostile, tmp_path):
    base, rows, folder, _ = hostile
    target = folder / "film.mkv"
    original = target.read_bytes()
    try:
        target.write_bytes(POLYGLOT)  # replaced by a page after it was indexed
        status, headers, body = get(base, rows[b"film.mkv"]["media"])
        assert (status, headers["content-type"], body) == (200, "application/octet-stream", POLYGLOT)
        assert headers["content-security-policy"] == "sandbox; default-src 'none'"
    finally:
        target.write_bytes(original)


def test_every_name_round_trips_as_the_file_has_it(hostile):
    base, rows, folder, _ = hostile
    for name in HOSTILE_NAMES:
        result = rows[name]
        assert result["name"] == name.decode("utf-8", "backslashreplace")  # as stored; bytes not UTF-8 as \\xNN
        status, _, body = get(base, result["media"])
        assert (status, body) == (200, Path(os.fsdecode(os.path.join(os.fsencode(folder), name))).read_bytes())


def test_any_loopback_address_is_answered_without_a_token(hostile):
    from centerclip.search.web.app import create_app

    _, _, _, store = hostile
    with running(create_app(store, None), host="127.0.0.2") as base:  # all of 127.0.0.0/8 is loopback
        status, _, body = get(base, "/api/health")
        assert status == 200 and json.loads(body)["rows"] == store.count()
        assert get(base, "/api/health", {"Host": "attacker.example"})[0] == 403


def test_browser_shows_hostile_names_as_they_are_and_never_runs_a_video_as_a_page(hostile, browser):
    from selenium.webdriver.common.by import By

    base, rows, _, _ = hostile
    names = {result["name"]: result for result in rows.values()}
    browser.get(base + "/?q=anything")
    wait_for(browser, f"document.querySelectorAll('#results .result').length === {len(rows)}")
    shown = [node.text for node in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]
    assert sorted(shown) == sorted(names)  # "%2e%2e%2f.mp4" is not "../.mp4"; "100%.mp4" does not throw
    assert browser.execute_script("return document.querySelectorAll('img:not([src^=\"/api/thumbnail/\"])').length") == 0
    for name in ["page.html", "100%.mp4", "%2e%2e%2f.mp4", "a #1?x=y&z.mp4", "caf\\xe9 %FF.mp4"]:
        card = browser.find_elements(By.CSS_SELECTOR, "#results .result")[shown.index(name)]
        card.find_element(By.CSS_SELECTOR, ".play").click()
        wait_for(browser, "(() => { const v = document.getElementById('video'); "
                          "return !v.error && v.readyState >= 2 && (v.currentTime > 0.2 || v.ended); })()")
        assert browser.find_element(By.ID, "playing").text.startswith(f"{name} · "), name
    assert browser.title == "centerclip search"
    card = browser.find_elements(By.CSS_SELECTOR, "#results .result")[shown.index("100%.mp4")]
    card.find_element(By.CSS_SELECTOR, ".similar").click()
    wait_for(browser, "location.search.includes('similar=') && document.querySelectorAll('#results .result').length > 0")
    assert browser.find_element(By.ID, "status").text.split(" (")[0].endswith("similar to 100%.mp4")

    # Opened on its own, the .html video is a video: a media document, sandboxed, no script run.
    browser.get(base + names["page.html"]["media"])
    time.sleep(1)
    assert browser.title != "owned" and "owned" not in browser.page_source.replace(
        "document.title='owned'", "")  # its bytes are not rendered as markup
    assert browser.find_elements(By.TAG_NAME, "video") and not browser.find_elements(By.TAG_NAME, "script")


@pytest.mark.parametrize("width, height", [(375, 800), (320, 640), (1600, 900)])
def test_browser_layout_fits_the_screen(hostile, browser, width, height):
    from selenium.webdriver.common.by import By

    base, rows, _, _ = hostile
    browser.set_window_size(width, height)
    try:
        browser.get(base + "/?q=anything")
        wait_for(browser, f"document.querySelectorAll('#results .result').length === {len(rows)}")
        inner = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner  # no horizontal scroll
        for element in browser.find_elements(By.CSS_SELECTOR, "header input, header select, header button, #results .result"):
            box = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];", element)
            assert 0 <= box[0] and box[1] <= inner, (element.tag_name, box, inner)
        if width >= 1000:  # a wide screen has the search controls on one line and several result columns
            tops = browser.execute_script("return [...document.querySelectorAll('header input, header select, header button')]"
                                          ".map(e => Math.round(e.getBoundingClientRect().top))")
            assert max(tops) - min(tops) < 10, tops
            lefts = browser.execute_script("return new Set([...document.querySelectorAll('#results .result')]"
                                           ".map(e => Math.round(e.getBoundingClientRect().left))).size")
            assert lefts >= 4
    finally:
        browser.set_window_size(1280, 900)
