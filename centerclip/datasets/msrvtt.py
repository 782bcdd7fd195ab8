"""MSR-VTT: the 1k-A test split (one caption per video) and the 7k / 9k training splits.

Two CSV formats, told apart by their header:
- a query file ``key,vid_key,video_id,sentence`` (1k-A): one caption per row;
- an id list ``video_id``: the captions come from ``MSRVTT_data.json``
  (``{"videos": [...], "sentences": [{"video_id", "caption"}, ...]}``, 20 per video).
An optional ``temporal`` column (true/false) in either file fills the table's ``temporal`` column;
the synthetic benchmark writes it. ``files`` maps split names to file names so that any
MSR-VTT-like layout reads through this code: the synthetic benchmark is one (:func:`synthetic`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from .common import AnnotationError, check_split, group_captions, locate, parse_bool, read_csv, read_json, to_table

FILES = {
    "train": "MSRVTT_train.9k.csv",
    "train7k": "MSRVTT_train.7k.csv",
    "test": "MSRVTT_JSFUSION_test.csv",
}
SYNTHETIC_FILES = {"train": "synthetic_train.csv", "val": "synthetic_val.csv", "test": "synthetic_test.csv"}
# Sizes of the generated synthetic set (here, not in synthetic.py, so that CLIs read them without
# importing the generator). The built-in model was trained on the train split (1,400 videos) of
# the first 2,000; research comparisons evaluate on the 2,500-video test split of 12,500 (the 400
# test videos of the first 2,000 among them, none trained on), where R@1's 95% interval is within
# +-1.5 points.
TRAINING_VIDEOS = 2000
EVALUATION_VIDEOS = 12500


def msrvtt(
    root: str | Path,
    split: str = "test",
    *,
    files: Mapping[str, str] = FILES,
    data_json: str = "MSRVTT_data.json",
    videos_dir: str | Path = "videos",
) -> pa.Table:
    """One row per video of ``split``; ``videos_dir`` is relative to ``root`` unless absolute."""
    check_split("msrvtt", split, files)
    root = Path(root)
    path = root / files[split]
    rows = read_csv(path, ("video_id",))
    if not rows:
        raise AnnotationError(f"{path}: no rows")
    is_query_file = "sentence" in rows[0]
    if is_query_file:
        captions = group_captions([(row["video_id"], row["sentence"]) for row in rows])
    else:
        captions = _captions_of([row["video_id"] for row in rows], root / data_json)
    temporal = {
        row["video_id"]: parse_bool(row["temporal"], f"{path}, video {row['video_id']}")
        for row in rows
        if "temporal" in row
    }
    videos = root / videos_dir
    return to_table(
        [
            {
                "video_id": video_id,
                "video_path": str(locate(videos, video_id, ".mp4")),
                "captions": texts,
                "split": split,
                "temporal": temporal.get(video_id),
            }
            for video_id, texts in captions.items()
        ],
        path,
    )


def _captions_of(video_ids: list[str], path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list) or not all(
        isinstance(s, dict) and isinstance(s.get("video_id"), str) and isinstance(s.get("caption"), str)
        for s in sentences
    ):
        raise AnnotationError(f"{path}: expected {{'sentences': [{{'video_id': str, 'caption': str}}, ...]}}")
    wanted = dict.fromkeys(video_ids)
    by_video = group_captions([(s["video_id"], s["caption"]) for s in sentences if s["video_id"] in wanted])
    uncaptioned = [video_id for video_id in wanted if video_id not in by_video]
    if uncaptioned:
        raise AnnotationError(f"{path}: no captions for {len(uncaptioned)} listed videos, e.g. {uncaptioned[:3]}")
    return {video_id: by_video[video_id] for video_id in wanted}


def synthetic(root: str | Path, split: str = "test", *, videos_dir: str | Path = "videos") -> pa.Table:
    """A split of our synthetic benchmark (``centerclip.datasets.synthetic`` writes it), with ``temporal`` flags."""
    return msrvtt(root, split, files=SYNTHETIC_FILES, videos_dir=videos_dir)
