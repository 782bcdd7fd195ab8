"""LSMDC: tab-separated rows ``clip_id, 4 timestamps, sentence`` with no header.

A clip id is ``<movie>_<start>-<end>``; clips are cut files at ``<videos>/<movie>/<clip_id>.avi``,
so start and end stay null (the whole file).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .common import AnnotationError, check_split, group_captions, locate, read_tsv, to_table

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def lsmdc(root: str | Path, split: str = "test", *, videos_dir: str | Path = "videos") -> pa.Table:
    """One row per clip of ``split`` with its sentence(s)."""
    check_split("lsmdc", split, FILES)
    root = Path(root)
    path = root / FILES[split]
    pairs = []
    for number, (clip_id, *_timestamps, sentence) in read_tsv(path, 6):
        if "_" not in clip_id or not sentence.strip():
            raise AnnotationError(f"{path}, line {number}: expected a clip id <movie>_<start>-<end> and a sentence")
        pairs.append((clip_id, sentence.strip()))
    videos = root / videos_dir
    return to_table(
        [
            {
                "video_id": clip_id,
                "video_path": str(locate(videos / clip_id.rsplit("_", 1)[0], clip_id, ".avi")),
                "captions": sentences,
                "split": split,
            }
            for clip_id, sentences in group_captions(pairs).items()
        ],
        path,
    )
