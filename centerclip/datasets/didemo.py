"""DiDeMo, paragraph-to-video retrieval.

``{split}_list.txt`` names the video files; ``{split}_data.json`` is a list of
``{"video": file name, "description": str, "times": [[s, e], ...]}`` with times in 5-second chunks
(one pair per annotator). Each video's descriptions become one paragraph, joined in the order the
file lists them, as the published code does: once the paragraph is cut to the text encoder's
context, the order decides which descriptions are seen.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .common import AnnotationError, check_split, locate, read_json, read_lines, to_table

SPLITS = ("train", "val", "test")


def didemo(root: str | Path, split: str = "test", *, videos_dir: str | Path = "videos") -> pa.Table:
    """One row per video of ``split``, captions = [its descriptions joined into a paragraph]."""
    check_split("didemo", split, SPLITS)
    root = Path(root)
    names = read_lines(root / f"{split}_list.txt")
    path = root / f"{split}_data.json"
    data = read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of {{'video', 'description', 'times'}}")
    moments: dict[str, list[str]] = {}
    for index, entry in enumerate(data):
        if not _is_moment(entry):
            raise AnnotationError(
                f"{path}: entry {index} needs 'video' (str), 'description' (str) and 'times' ([[s, e], ...])"
            )
        moments.setdefault(entry["video"], []).append(entry["description"].strip())
    undescribed = [name for name in names if name not in moments]
    if undescribed:
        raise AnnotationError(f"{path}: no descriptions for {len(undescribed)} videos, e.g. {undescribed[:3]}")
    videos = root / videos_dir
    return to_table(
        [
            {
                "video_id": name,
                "video_path": str(locate(videos, Path(name).stem, Path(name).suffix or ".mp4")),
                "captions": [" ".join(moments[name])],
                "split": split,
            }
            for name in names
        ],
        root / f"{split}_list.txt",
    )


def _is_moment(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("video"), str)
        and isinstance(entry.get("description"), str)
        and isinstance(entry.get("times"), list)
        and len(entry["times"]) > 0
        and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, (int, float)) for t in pair)
            for pair in entry["times"]
        )
    )
