"""MSVD: ``{train,val,test}_list.txt`` (one video id per line) and ``raw-captions.pkl``.

The captions file is a pickle, and unpickling can run arbitrary code, so it is read by an
unpickler that refuses every global: the documented content (a dict of lists of lists of
strings) needs none, and anything that asks for one (a class, ``os.system``) is not captions.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pyarrow as pa

from .common import AnnotationError, check_split, locate, read_lines, require_file, to_table

SPLITS = ("train", "val", "test")


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")


def load_raw_captions(path: str | Path) -> dict[str, list[str]]:
    """``{video_id: [caption, ...]}`` from raw-captions.pkl, token lists joined with spaces."""
    path = Path(path)
    require_file(path)
    with path.open("rb") as file:
        try:
            data = _PlainDataUnpickler(file).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise AnnotationError(f"{path}: not a plain pickle of captions ({error}); it is refused unread") from error
    if not isinstance(data, dict) or not all(
        isinstance(video_id, str)
        and isinstance(captions, list)
        and all(isinstance(tokens, list) and all(isinstance(t, str) for t in tokens) for tokens in captions)
        for video_id, captions in data.items()
    ):
        raise AnnotationError(f"{path}: expected {{video_id: [[token, ...], ...]}}")
    return {video_id: [" ".join(tokens) for tokens in captions] for video_id, captions in data.items()}


def msvd(root: str | Path, split: str = "test", *, videos_dir: str | Path = "videos") -> pa.Table:
    """One row per video of ``split``, with all its captions; videos are ``<id>.avi`` (or re-encoded)."""
    check_split("msvd", split, SPLITS)
    root = Path(root)
    path = root / f"{split}_list.txt"
    video_ids = read_lines(path)
    captions = load_raw_captions(root / "raw-captions.pkl")
    uncaptioned = [video_id for video_id in video_ids if not captions.get(video_id)]
    if uncaptioned:
        raise AnnotationError(
            f"{root / 'raw-captions.pkl'}: no captions for {len(uncaptioned)} videos of {path.name},"
            f" e.g. {uncaptioned[:3]}"
        )
    videos = root / videos_dir
    return to_table(
        [
            {
                "video_id": video_id,
                "video_path": str(locate(videos, video_id, ".avi")),
                "captions": captions[video_id],
                "split": split,
            }
            for video_id in video_ids
        ],
        path,
    )
