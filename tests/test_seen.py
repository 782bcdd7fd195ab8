"""What a streaming listing remembers (index/seen.py), and the stream itself in chunks."""

import os

import numpy as np

from centerclip.index.listing import InputStream, list_inputs
from centerclip.index.seen import FirstSeen, digest
from tests.videos import write_video


def test_first_seen_keeps_the_first_value_across_its_merged_levels():
    seen = FirstSeen(recent=64)  # small, so that 10,000 members go through many flushes and merges
    rng = np.random.default_rng(0)
    keys = [int(key) for key in rng.integers(0, 2**63, 10_000, dtype=np.int64)]
    expected = {}
    for value, key in enumerate(keys + keys[:500]):  # the second time round, nothing is new
        assert seen.add(key, value) == (key not in expected)
        expected.setdefault(key, value)
    assert len(seen) == len(expected) and len(seen.levels) <= 14  # log2(10,000 / 64) levels at most, about
    assert all(seen.get(key) == value for key, value in expected.items())
    assert all(key + 1 not in seen for key in keys[:200] if key + 1 not in expected)


def test_digests_tell_names_apart_and_take_any_bytes():
    names = [f"s3://b/{index}.mp4" for index in range(5_000)] + ["/v/bad\udcff.mp4", b"/v/bad\xff.mp4"]
    assert len({digest(name) for name in names}) == len(names) - 1  # the str and bytes of one name agree
    assert all(0 <= digest(name) < 2**64 for name in names)


def test_a_listing_in_small_chunks_is_the_whole_listing(tmp_path):
    folder = tmp_path / "videos"
    for index in range(12):
        sub = folder / f"part{index % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        write_video(sub / f"{index}.mp4", frames=2) if index < 3 else (sub / f"{index}.mp4").write_bytes(b"x" * index)
    (folder / "notes.txt").write_text("not a video")
    os.link(folder / "part0" / "0.mp4", folder / "hard.mp4")
    stream = InputStream([str(folder)])
    chunks = list(stream.chunks(size=4))
    assert len(chunks) == 4 and all(len(sources) + len(errors) <= 4 for sources, errors in chunks)
    whole = list_inputs([str(folder)])
    assert sorted(s.uri for sources, _ in chunks for s in sources) == sorted(s.uri for s in whole.sources)
    assert len(whole.sources) == 12 and [error["reason"] for error in whole.errors if "hard" not in error["uri"]
                                          and "0.mp4" not in error["uri"]] == ["unknown extension and not a video container"]
    duplicate = [error for error in whole.errors if error["reason"].startswith("duplicate: same file as")]
    assert len(duplicate) == 1  # one of the two names of the hard-linked file
    assert stream.done and all(stream.was_listed(s.uri) for s in whole.sources) and not stream.was_listed("/elsewhere")
