"""The table mirrors the library: a corpus of odd names, broken files and real formats, indexed,
changed, killed mid-write and pruned, with real Ray, real LanceDB and real files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from centerclip.media.sources import path_from_uri, uri_from_path
from centerclip.index.store import Store
from centerclip.commands import index
from centerclip.commands import search as search_cli
from tests.videos import truncate, write_audio, write_video

MODEL = ["--model", "centerclip-test", "--frames", "4", "--batch-size", "4"]
MOMENTS = ["--moment-length", "10", "--moment-stride", "10", "--moments-after", "20"]
ODD = ["clip[1].mp4", "star*.mp4", "what?.mp4", "-leading dash.mp4", "quotes ' and \".mp4", "new\nline.mp4",
       "x" * 246 + ".mp4"]


def name(path: bytes | str) -> str:
    return os.fsdecode(path)


@pytest.fixture
def library(tmp_path):
    """name -> what must become of it: "video" or the start of its error reason."""
    root, outside = tmp_path / "library", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    expected = {}

    def video(file_name, **kwargs):
        write_video(root / file_name, width=48, height=32, **kwargs)
        expected[file_name] = "video"

    video("long.mp4", frames=250)  # 25 s: a video row and three moments
    video(name(b"bad\xff name.mp4"))
    for odd in ODD:
        video(odd)
    video("vp8.ogv", codec="libvpx")  # Ogg (this PyAV build encodes no Theora)
    video("vp8.ogg", codec="libvpx")
    video("anim.gif", codec="gif", pix_fmt="rgb8")
    video("repeats.nut", codec="mpeg4", repeat_every=3)  # zero-size packets; sniffed, not a known extension
    video("damaged.mkv", codec="mpeg4", frames=30, damage_after=12)
    video("notes.mp4", frames=3)  # becomes text below, then a video again
    (root / "notes.mp4").write_text("this is not a video")
    expected["notes.mp4"] = "cannot decode"
    (root / "sub").mkdir()
    video("sub/nested.webm", codec="libvpx")
    write_video(root / "whole.mp4", frames=100)
    truncate(root / "whole.mp4", root / "cut30.mp4", 0.3)
    truncate(root / "whole.mp4", root / "cut90.mp4", 0.9)
    expected.update({"whole.mp4": "video", "cut30.mp4": "cannot decode", "cut90.mp4": "cannot decode"})
    (root / "empty.mp4").touch()
    expected["empty.mp4"] = "empty file"
    write_audio(root / "audio.m4a")
    expected["audio.m4a"] = "no video stream"
    (root / "readme.txt").write_text("hello")
    expected["readme.txt"] = "unknown extension"
    os.mkfifo(root / "pipe.mp4")
    expected["pipe.mp4"] = "not a regular file: named pipe"
    os.symlink(root / "missing.mp4", root / "broken.mp4")
    expected["broken.mp4"] = "broken symlink"
    os.symlink(root / "loop_b.mp4", root / "loop_a.mp4")
    os.symlink(root / "loop_a.mp4", root / "loop_b.mp4")
    expected.update({"loop_a.mp4": "symlink loop", "loop_b.mp4": "symlink loop"})
    write_video(outside / "shared.mp4", frames=10)
    os.symlink(outside / "shared.mp4", root / "link1.mp4")
    # A symlink to a file the walk lists under its own name is that file's duplicate, in any order.
    os.symlink(root / "long.mp4", root / "link2.mp4")
    expected.update({"link1.mp4": "video", "link2.mp4": "duplicate: same file as"})
    return root, expected


def uri(root: Path, file_name: str) -> str:
    return uri_from_path(os.fsencode(root) + b"/" + os.fsencode(file_name))


def state(db: str) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """uri -> its rows, uri -> its error row."""
    store = Store.open(db)
    rows: dict[str, list[dict]] = {}
    for row in store.videos.to_arrow().select(["id", "video_id", "kind", "uri", "start", "end"]).to_pylist():
        rows.setdefault(row["uri"], []).append(row)
    errors = {row["uri"]: row for row in store.errors().to_pylist()}
    return rows, errors


def check_mirror(db: str, root: Path, expected: dict[str, str]) -> tuple[dict, dict]:
    """Every input in exactly one of (rows, errors), with the expected outcome; one video per uri."""
    rows, errors = state(db)
    assert not set(rows) & set(errors)
    assert set(rows) | set(errors) == {uri(root, file_name) for file_name in expected}
    for file_name, outcome in expected.items():
        key = uri(root, file_name)
        if outcome == "video":
            videos = [row for row in rows.get(key, []) if row["kind"] == "video"]
            assert len(videos) == 1 and all(row["video_id"] == videos[0]["id"] for row in rows[key]), file_name
        else:
            assert errors[key]["reason"].startswith(outcome), (file_name, errors[key]["reason"])
    return rows, errors


def test_the_index_mirrors_a_library_through_changes_kills_and_prunes(ray_session, library, tmp_path, capsys):
    root, expected = library
    db = str(tmp_path / "db")
    first = index.main([str(root), "--db", db, *MODEL, *MOMENTS])
    rows, errors = check_mirror(db, root, expected)
    failed = {file_name for file_name, outcome in expected.items() if outcome != "video"}
    assert first["errors"] == len(failed) and first["failures"]["count"] == len(failed)
    assert first["videos"] == len(expected) - len(failed) and first["moments"] == 3
    printed = capsys.readouterr().out
    assert f"{len(failed)} inputs not indexed (failed in this run or before, or not videos), by reason:" in printed and "  symlink loop (2)" in printed
    assert {errors[uri(root, n)]["stage"] for n in ("pipe.mp4", "broken.mp4", "readme.txt", "link2.mp4")} == {"probe"}
    assert {errors[uri(root, n)]["stage"] for n in ("notes.mp4", "cut30.mp4", "empty.mp4", "audio.m4a")} == {"decode"}
    assert len(rows[uri(root, "long.mp4")]) == 4

    # An unchanged failure is not decoded again; --retry-errors decodes it again.
    again = index.main([str(root), "--db", db, *MODEL])
    decode_failures = sum(row["stage"] == "decode" for row in errors.values())
    assert again["videos"] == 0 and again["failed_before"] == decode_failures
    retried = index.main([str(root), "--db", db, *MODEL, "--retry-errors"])
    assert retried["failed_before"] == 0 and retried["errors"] == len(failed)
    assert state(db)[1].keys() == errors.keys()

    # Changes: a long file replaced by a short one, a touched file, deleted files, a fixed file.
    write_video(root / "long.mp4", frames=30, width=48, height=32)
    os.utime(root / "what?.mp4", ns=(1_000_000_000, 1_000_000_000))
    (root / "star*.mp4").unlink()
    (root / "pipe.mp4").unlink()
    shutil.rmtree(root / "sub")
    write_video(root / "notes.mp4", frames=30, width=48, height=32)
    for gone in ("star*.mp4", "pipe.mp4", "sub/nested.webm"):
        del expected[gone]
    expected["notes.mp4"] = "video"

    # A kill between the commit of notes.mp4's rows and the removal of its error row.
    notes = uri(root, "notes.mp4")
    script = ("import os, sys\n"
              "from centerclip.index.store import Store\n"
              "clear = Store._clear_errors\n"
              "def killed(self, uris):\n"
              f"    if {notes!r} in uris: os._exit(137)\n"
              "    clear(self, uris)\n"
              "Store._clear_errors = killed\n"
              "from centerclip.commands import index\n"
              "index.main(sys.argv[1:])\n")
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    killed = subprocess.run([sys.executable, "-c", script, str(root), "--db", db, *MODEL, "--batch-size", "1"],
                            cwd=Path(__file__).parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    rows, errors = state(db)
    assert notes in rows and notes in errors  # the inconsistency the kill left

    final = index.main([str(root), "--db", db, *MODEL, *MOMENTS, "--prune"])
    rows, errors = check_mirror(db, root, expected)
    assert final["pruned"] == {"videos": 2, "rows": 2, "errors": 1}
    assert [row["kind"] for row in rows[uri(root, "long.mp4")]] == ["video"]  # its old moments are gone
    assert len(rows[uri(root, "what?.mp4")]) == 1
    assert final["rows_in_table"] == sum(len(value) for value in rows.values())

    # The whole errors table, one JSON object per line.
    capsys.readouterr()
    index.main(["--db", db, "--list-errors"])
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(row["uri"] for row in listed) == sorted(errors)

    # Search by a file whose name looks like a glob: the file itself is never its own result, and
    # a non-UTF-8 result names a path that opens.
    videos = [key for key, value in rows.items() if any(row["kind"] == "video" for row in value)]
    similar = search_cli.main(["--video", str(root / "clip[1].mp4"), "--db", db, "--k", "100", "--model", "centerclip-test"])
    assert len(similar) == len(videos) - 1 and uri(root, "clip[1].mp4") not in [result.uri for result in similar]
    odd = next(result.uri for result in similar if result.uri.startswith("file://"))
    assert os.path.isfile(path_from_uri(odd))


def test_prune_never_removes_what_is_outside_the_inputs(ray_session, tmp_path):
    one, two = tmp_path / "one", tmp_path / "one-two"  # a sibling sharing the prefix, not a subfolder
    one.mkdir()
    two.mkdir()
    for folder in (one, two):
        write_video(folder / "a.mp4", frames=10)
        write_video(folder / "b.mp4", frames=10)
    db = str(tmp_path / "db")
    index.main([str(one), str(two), "--db", db, *MODEL])
    (one / "a.mp4").unlink()
    (two / "a.mp4").unlink()
    pruned = index.main([str(one), "--db", db, *MODEL, "--prune"])["pruned"]
    assert pruned == {"videos": 1, "rows": 1, "errors": 0}
    assert set(state(db)[0]) == {str(one / "b.mp4"), str(two / "a.mp4"), str(two / "b.mp4")}
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"uri\n{two / 'b.mp4'}\n")
    assert index.main([str(manifest), "--db", db, *MODEL, "--prune"])["pruned"] == {"videos": 0, "rows": 0, "errors": 0}
