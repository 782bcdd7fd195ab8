"""Row keys: stable hex digests of a video's file and a moment's time range, and the columns rows
can be filtered on. Kept apart from the store so that processes that only name rows (the encoder
actors) and CLIs that only parse arguments do not import LanceDB."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

KEY_PATTERN = re.compile(r"[0-9a-f]{32}")
# Columns a search may filter on by exact value; anything else is refused before a query is built.
FILTERABLE = ("kind", "uri", "video_id", "model", "schedule")


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:32]


def video_key(uri: str, size: int, mtime_ns: int, tag: str = "") -> str:
    """A video's id: changes when the file at ``uri`` is replaced or rewritten. ``tag``: an object's
    version tag (S3's ETag), which changes with its content even within the second its
    modification time is counted in; local files have none (and keep the ids they always had)."""
    return _digest("video", uri, int(size), int(mtime_ns), *([tag] if tag else []))


def moment_key(video_key: str, start: float, end: float) -> str:
    """A moment's id, from its video's id and its time range rounded to milliseconds."""
    check_keys([video_key])
    return _digest("moment", video_key, f"{start:.3f}", f"{end:.3f}")


def check_keys(keys: Iterable[str]) -> list[str]:
    """Keys are our own hex digests; anything else is refused before it reaches a filter."""
    keys = list(keys)
    bad = [key for key in keys if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key)]
    if bad:
        raise ValueError(f"not a key (32 lowercase hex digits): {bad[0]!r}")
    return keys
