"""The synthetic benchmark: determinism, layout, grammar, twins, decodable videos, caching."""

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from centerclip.datasets import SCHEMA, load
from centerclip.datasets.synthetic import ensure_synthetic, generate, main, render, write_video
from centerclip.datasets.synthetic_scenes import COLORS, DIRECTIONS, SHAPES, plan, twin

VIDEOS = 12  # six pairs: train, val and test, twins and non-twins (see PAIR_PLAN)
ANNOTATIONS = ("MSRVTT_data.json", "synthetic_train.csv", "synthetic_val.csv", "synthetic_test.csv", "synthetic.json")


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic") / "out", VIDEOS, seed=7).out


def test_same_seed_gives_identical_annotations_and_frames(benchmark, tmp_path):
    again = main(["--out", str(tmp_path / "again"), "--videos", str(VIDEOS), "--seed", "7"]).out
    for name in ANNOTATIONS:
        assert (benchmark / name).read_bytes() == (again / name).read_bytes(), name
    for video in ("video0", "video11"):
        assert np.array_equal(decode(benchmark / "videos" / f"{video}.mp4"), decode(again / "videos" / f"{video}.mp4"))
    other = plan(VIDEOS, seed=8)
    assert [video.captions for video in other] != [video.captions for video in plan(VIDEOS, seed=7)]


def test_layout_reads_back_through_the_adapter(benchmark):
    tables = {split: load("synthetic", benchmark, split=split) for split in ("train", "val", "test")}
    assert all(table.schema == SCHEMA for table in tables.values())
    assert [table.num_rows for table in tables.values()] == [6, 2, 4]
    assert all(all(table["exists"].to_pylist()) for table in tables.values())
    assert all(len(captions) >= 3 for captions in tables["train"]["captions"].to_pylist())
    assert all(len(captions) == 1 for captions in tables["test"]["captions"].to_pylist())
    # Pair 0 of the plan is a test twin pair, pair 5 a test pair of unrelated scenes.
    test = tables["test"].to_pylist()
    assert [(row["video_id"], row["temporal"]) for row in test] == [
        ("video0", True),
        ("video1", True),
        ("video10", False),
        ("video11", False),
    ]


def test_each_video_decodes_with_the_planned_size_and_length(benchmark):
    planned = json.loads((benchmark / "MSRVTT_data.json").read_text())["videos"]
    assert len(planned) == VIDEOS
    for video in planned:
        frames = decode(benchmark / "videos" / f"{video['video_id']}.mp4")
        assert frames.shape == (video["frames"], 112, 112, 3)
        assert 40 <= video["frames"] <= 80  # 4 to 8 seconds at 10 fps
        assert frames.std() > 0  # something is drawn


def test_captions_vary_along_every_axis_of_the_grammar():
    text = " ".join(caption for video in plan(300, seed=0) for caption in video.captions)
    words = set(re.findall(r"[a-z]+", text))
    expected = {*SHAPES, *COLORS, *DIRECTIONS, "small", "large", "slowly", "quickly", "black", "gray", "white"}
    expected |= {"two", "three", "circles", "crosses", "then", "after", "before", "appears", "disappears", "moves"}
    assert expected <= words


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption)


def test_twins_differ_only_in_direction_or_event_order():
    planned = {video.video_id: video for video in plan(200, seed=0)}
    twins = [(video, planned[video.twin]) for video in planned.values() if video.twin and video.video_id < video.twin]
    kinds = {len(video.scene.events) for video, _ in twins}
    assert kinds == {1, 2}, "both direction twins and event-order twins are generated"
    direction_words = {"left", "right", "up", "down", "upward", "downward"}
    for video, partner in twins:
        assert partner.split == video.split and partner.twin == video.video_id
        assert twin(video.scene) == partner.scene
        for mine, theirs in zip(video.captions, partner.captions, strict=True):
            assert mine != theirs
            if len(video.scene.events) == 1:
                changed = {a for a, b in zip(_words(mine), _words(theirs), strict=True) if a != b}
                assert changed <= direction_words
            else:
                assert sorted(_words(mine)) == sorted(_words(theirs))


def test_a_direction_twin_is_its_partner_played_backwards():
    video = next(v for v in plan(40, seed=0) if v.twin and len(v.scene.events) == 1)
    forwards, backwards = render(video.scene, 64, 10), render(twin(video.scene), 64, 10)
    assert (forwards != backwards[::-1]).any(axis=-1).mean() < 1e-3
    assert not np.array_equal(forwards, backwards)


def test_rerun_skips_complete_videos_and_regenerates_missing_ones(benchmark):
    video = benchmark / "videos" / "video3.mp4"
    written_at = video.stat().st_mtime_ns
    report = generate(benchmark, VIDEOS, seed=7)
    assert (report.written, report.skipped) == (0, VIDEOS)
    assert video.stat().st_mtime_ns == written_at
    (benchmark / "videos" / "video5.mp4").unlink()
    assert ensure_synthetic(benchmark, VIDEOS, seed=7) == benchmark
    assert (benchmark / "videos" / "video5.mp4").exists()
    assert not list(benchmark.rglob("*.partial"))
    with pytest.raises(ValueError, match="made with Settings\\(seed=7"):
        generate(benchmark, VIDEOS, seed=8)


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(ValueError):
        write_video(np.zeros((3, 32, 32), np.float32), path, fps=10)  # not RGB frames
    assert list(tmp_path.iterdir()) == []
