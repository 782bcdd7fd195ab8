"""ActivityNet Captions, paragraph-to-video retrieval.

``{"v_<id>": {"duration": s, "timestamps": [[s, e], ...], "sentences": [str, ...]}}``; the
standard protocol joins all sentences of a video into one paragraph and matches it against the
whole video, so each row has one caption and null start / end. ``val_1.json`` is the test split.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .common import AnnotationError, check_split, locate, read_json, to_table

FILES = {"train": "train.json", "test": "val_1.json"}
# The official CenterCLIP loader (dataloaders/dataloader_activitynet_retrieval.py) removes this video
# as broken (its file in the public download does not decode); it is in val_1.json. Dropping it keeps
# our test split the one the paper's figures were measured on (4,916 val_1 videos, not 4,917).
BROKEN = frozenset({"v_NHznDFD3V3k", "NHznDFD3V3k"})


def activitynet(root: str | Path, split: str = "test", *, videos_dir: str | Path = "videos") -> pa.Table:
    """One row per video of ``split``, captions = [the paragraph of all its sentences]."""
    check_split("activitynet", split, FILES)
    root = Path(root)
    path = root / FILES[split]
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object {{video_id: {{'sentences': [...]}}}}")
    videos = root / videos_dir
    rows = []
    for video_id, entry in data.items():
        if video_id in BROKEN:
            continue
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise AnnotationError(f"{path}: entry {video_id!r} needs a non-empty list of sentences")
        rows.append(
            {
                "video_id": video_id,
                "video_path": str(locate(videos, video_id, ".mp4")),
                "captions": [" ".join(sentence.strip() for sentence in sentences)],
                "split": split,
            }
        )
    return to_table(rows, path)
