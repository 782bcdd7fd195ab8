"""Benchmark adapters against the real split files in tests/data and small files in the documented formats."""

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest

from centerclip.datasets import SCHEMA, AnnotationError, load, load_raw_captions

# Real split files of MSR-VTT and MSVD, shipped with the tests (see tests/data/README.md).
DATA = Path(__file__).resolve().parent / "data"


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def msrvtt_root(tmp_path):
    """The real MSR-VTT split files plus an MSRVTT_data.json with two captions per video."""
    for name in ("MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv"):
        shutil.copy(DATA / "msrvtt" / name, tmp_path / name)
    sentences = [{"video_id": f"video{i}", "caption": f"clip {i} caption {k}"} for i in range(10000) for k in (0, 1)]
    write_json(tmp_path / "MSRVTT_data.json", {"videos": [], "sentences": sentences})
    return tmp_path


def test_msrvtt_1k_a_test_split_has_1000_caption_video_pairs(caplog):
    with caplog.at_level(logging.WARNING):
        table = load("msrvtt", DATA / "msrvtt", split="test")
    assert table.schema == SCHEMA
    assert table.num_rows == 1000
    assert len(set(table["video_id"].to_pylist())) == 1000
    first = table.slice(0, 1).to_pylist()[0]
    assert first["video_id"] == "video9770"
    assert first["captions"] == ["a person is connecting something to system"]
    assert first["video_path"] == str(DATA / "msrvtt" / "videos" / "video9770.mp4")
    assert first["start"] is None and first["end"] is None and first["split"] == "test"
    # No videos are shipped: every row is kept and flagged, and the warning counts them.
    assert not any(table["exists"].to_pylist())
    assert "1000 of 1000 videos are missing" in caplog.text


@pytest.mark.parametrize(("split", "videos"), [("train", 9000), ("train7k", 7010)])
def test_msrvtt_train_splits_take_captions_from_data_json(msrvtt_root, split, videos):
    table = load("msrvtt", msrvtt_root, split=split)
    assert table.num_rows == videos
    assert table["video_id"][0].as_py() == "video0"
    assert table["captions"][0].as_py() == ["clip 0 caption 0", "clip 0 caption 1"]


def test_msrvtt_videos_dir_is_configurable_and_present_videos_are_found(msrvtt_root, tmp_path, caplog):
    clips = tmp_path / "elsewhere"
    clips.mkdir()
    (clips / "video9770.mp4").touch()
    (clips / "video7118.avi").touch()  # a re-encoded copy is found by its extension
    with caplog.at_level(logging.WARNING):
        table = load("msrvtt", msrvtt_root, split="test", videos_dir=clips)
    rows = {row["video_id"]: row for row in table.to_pylist()}
    assert rows["video9770"]["exists"] and rows["video9770"]["video_path"] == str(clips / "video9770.mp4")
    assert rows["video7118"]["exists"] and rows["video7118"]["video_path"].endswith("video7118.avi")
    assert sum(table["exists"].to_pylist()) == 2
    assert "998 of 1000 videos are missing" in caplog.text


def test_msrvtt_captions_missing_from_data_json_is_an_error(msrvtt_root):
    write_json(msrvtt_root / "MSRVTT_data.json", {"sentences": [{"video_id": "video0", "caption": "x"}]})
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: no captions for 8999 listed videos"):
        load("msrvtt", msrvtt_root, split="train")
    write_json(msrvtt_root / "MSRVTT_data.json", [{"video_id": "video0"}])
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: expected"):
        load("msrvtt", msrvtt_root, split="train")


def test_malformed_csv_row_names_file_and_line(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr0,video0,a dog runs\nret1,msr1,video1\n", encoding="utf-8"
    )
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv, line 3: expected 4 fields"):
        load("msrvtt", tmp_path, split="test")


def test_missing_annotation_file_unknown_split_and_unknown_benchmark(tmp_path):
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv: annotation file not found"):
        load("msrvtt", tmp_path, split="test")
    with pytest.raises(ValueError, match="msvd has splits train, val, test; got 'dev'"):
        load("msvd", tmp_path, split="dev")
    with pytest.raises(ValueError, match="unknown benchmark 'kinetics'"):
        load("kinetics", tmp_path)


@pytest.fixture
def msvd_root(tmp_path):
    """The real MSVD split lists plus a raw-captions.pkl of token lists for every listed video."""
    ids = []
    for split in ("train", "val", "test"):
        shutil.copy(DATA / "msvd" / f"{split}_list.txt", tmp_path / f"{split}_list.txt")
        ids += (tmp_path / f"{split}_list.txt").read_text().split()
    captions = {video_id: [["a", "man", "is", "cooking"], ["someone", "cooks"]] for video_id in ids}
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    return tmp_path


@pytest.mark.parametrize(("split", "videos"), [("train", 1200), ("val", 100), ("test", 670)])
def test_msvd_splits_have_their_real_sizes_and_joined_captions(msvd_root, split, videos):
    table = load("msvd", msvd_root, split=split)
    assert table.schema == SCHEMA
    assert table.num_rows == videos
    assert table["captions"][0].as_py() == ["a man is cooking", "someone cooks"]
    assert table["video_path"][0].as_py().endswith(".avi")


def test_msvd_finds_videos_with_other_extensions(msvd_root):
    (msvd_root / "videos").mkdir()
    (msvd_root / "videos" / "eyhzdC936uk_15_27.mp4").touch()
    row = load("msvd", msvd_root, split="test").slice(0, 1).to_pylist()[0]
    assert row["exists"] and row["video_path"] == str(msvd_root / "videos" / "eyhzdC936uk_15_27.mp4")


class _RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_msvd_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"video0": _RunsAShellCommand(marker)}))
    with pytest.raises(AnnotationError, match=r"raw-captions\.pkl: not a plain pickle .*refused to load global"):
        load_raw_captions(path)
    assert not marker.exists()


def test_msvd_captions_of_the_wrong_shape_are_an_error(tmp_path):
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"video0": ["not", "token", "lists"]}))
    with pytest.raises(AnnotationError, match=r"raw-captions\.pkl: expected \{video_id"):
        load_raw_captions(path)


def test_lsmdc_reads_tab_separated_clips_under_their_movie(tmp_path):
    first, second = "0001_American_Beauty_00.00.51.926-00.00.54.129", "0001_American_Beauty_00.01.10.000-00.01.12.500"
    rows = [
        f"{first}\t00.00.51.926\t00.00.54.129\t00.00.51.926\t00.00.54.129\tSomeone looks up.",
        f"{second}\t00.01.10.000\t00.01.12.500\t00.01.10.000\t00.01.12.500\tShe smiles.",
    ]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    movie = tmp_path / "videos" / "0001_American_Beauty"
    movie.mkdir(parents=True)
    (movie / f"{first}.avi").touch()
    table = load("lsmdc", tmp_path, split="test")
    assert table.schema == SCHEMA
    assert table["captions"].to_pylist() == [["Someone looks up."], ["She smiles."]]
    assert table["exists"].to_pylist() == [True, False]
    assert table["video_path"][1].as_py() == str(movie / f"{second}.avi")


def test_lsmdc_row_with_wrong_field_count_names_line(tmp_path):
    good = "m_1-2\t1\t2\t1\t2\tA sentence."
    (tmp_path / "LSMDC16_annos_val.csv").write_text(f"{good}\nm_3-4\t3\t4\tno sentence\n", encoding="utf-8")
    with pytest.raises(
        AnnotationError, match=r"LSMDC16_annos_val\.csv, line 2: expected 6 tab-separated fields, found 4"
    ):
        load("lsmdc", tmp_path, split="val")


def test_activitynet_matches_the_whole_paragraph_to_the_whole_video(tmp_path):
    data = {
        "v_abc": {
            "duration": 30.0,
            "timestamps": [[0, 10], [10, 30]],
            "sentences": ["A man enters. ", " He sits down."],
        },
        "v_def": {"duration": 12.5, "timestamps": [[0, 12.5]], "sentences": ["A dog barks."]},
        "v_NHznDFD3V3k": {"duration": 9.0, "timestamps": [[0, 9]], "sentences": ["Dropped as broken."]},
    }
    write_json(tmp_path / "val_1.json", data)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v_def.webm").touch()
    table = load("activitynet", tmp_path, split="test")
    assert table["video_id"].to_pylist() == ["v_abc", "v_def"], "the official loader drops v_NHznDFD3V3k"
    assert table["captions"].to_pylist() == [["A man enters. He sits down."], ["A dog barks."]]
    assert table["start"].null_count == 2
    assert table["exists"].to_pylist() == [False, True]
    assert table["video_path"][1].as_py().endswith("v_def.webm")


def test_activitynet_wrong_json_shape_is_an_error(tmp_path):
    write_json(tmp_path / "train.json", {"v_abc": {"duration": 3.0, "sentences": "not a list"}})
    with pytest.raises(AnnotationError, match=r"train\.json: entry 'v_abc' needs a non-empty list of sentences"):
        load("activitynet", tmp_path, split="train")
    write_json(tmp_path / "train.json", [1, 2])
    with pytest.raises(AnnotationError, match=r"train\.json: expected an object"):
        load("activitynet", tmp_path, split="train")


def test_didemo_joins_descriptions_in_the_files_order(tmp_path):
    (tmp_path / "test_list.txt").write_text("a@N01_1_x.mov\nb@N02_2_y.mp4\n", encoding="utf-8")
    moments = [
        {"video": "a@N01_1_x.mov", "description": "the dog jumps", "times": [[3, 4], [3, 3], [2, 4], [3, 4]]},
        {"video": "a@N01_1_x.mov", "description": "a dog appears", "times": [[0, 0], [0, 1], [0, 0], [0, 0]]},
        {"video": "b@N02_2_y.mp4", "description": "people wave", "times": [[1, 1]]},
        {"video": "b@N02_2_y.mp4", "description": "a car passes", "times": [[1, 2]]},
        {"video": "other.mov", "description": "another split", "times": [[0, 0]]},
    ]
    write_json(tmp_path / "test_data.json", moments)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a@N01_1_x.mp4").touch()  # re-encoded from .mov, as CLIP4Clip users do
    table = load("didemo", tmp_path, split="test")
    assert table["video_id"].to_pylist() == ["a@N01_1_x.mov", "b@N02_2_y.mp4"]
    # As the file lists them (the published order), not by time or text.
    assert table["captions"].to_pylist() == [["the dog jumps a dog appears"], ["people wave a car passes"]]
    assert table["exists"].to_pylist() == [True, False]


def test_didemo_malformed_entry_and_undescribed_video_are_errors(tmp_path):
    (tmp_path / "val_list.txt").write_text("a.mov\n", encoding="utf-8")
    write_json(tmp_path / "val_data.json", [{"video": "a.mov", "description": "x", "times": [[1]]}])
    with pytest.raises(AnnotationError, match=r"val_data\.json: entry 0 needs"):
        load("didemo", tmp_path, split="val")
    write_json(tmp_path / "val_data.json", [{"video": "b.mov", "description": "x", "times": [[1, 1]]}])
    with pytest.raises(AnnotationError, match=r"val_data\.json: no descriptions for 1 videos"):
        load("didemo", tmp_path, split="val")
