"""The one table every benchmark adapter returns, and the careful file readers they share.

Adapters never drop a row: a video whose file is missing keeps its row with ``exists = False``
and is counted in a logged warning, so a half-downloaded benchmark cannot silently shrink.
Bad annotation input raises :class:`AnnotationError` naming the file (and the line, for rows).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),
        # Seconds into the file; null means the whole file (every benchmark here ships clips).
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("captions", pa.list_(pa.string()), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("exists", pa.bool_(), nullable=False),
        # True where the video has a twin in the same split that differs only in motion direction
        # or event order (the synthetic benchmark); null where the benchmark does not say.
        pa.field("temporal", pa.bool_()),
    ]
)

# Tried in this order after the benchmark's own extension, for re-encoded copies of a benchmark.
EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class AnnotationError(ValueError):
    """An annotation file is missing or does not have the documented format."""


def locate(videos_dir: Path, stem: str, first: str) -> Path:
    """The existing file ``stem + extension`` (``first`` tried first), else the expected path."""
    for extension in dict.fromkeys((first, *EXTENSIONS)):
        path = videos_dir / f"{stem}{extension}"
        if path.exists():
            return path
    return videos_dir / f"{stem}{first}"


def to_table(rows: list[dict[str, Any]], source: Path) -> pa.Table:
    """Rows (dicts with SCHEMA's names, ``exists`` left out) -> the table; warns about missing videos."""
    rows = [{"start": None, "end": None, "temporal": None, **row} for row in rows]
    for row in rows:
        row["exists"] = Path(row["video_path"]).exists()
    missing = [row["video_path"] for row in rows if not row["exists"]]
    if missing:
        log.warning(
            "%s: %d of %d videos are missing (kept with exists=False), e.g. %s",
            source,
            len(missing),
            len(rows),
            ", ".join(missing[:3]),
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def group_captions(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(video_id, caption) pairs -> captions per video, videos in first-seen order."""
    captions: dict[str, list[str]] = {}
    for video_id, caption in pairs:
        captions.setdefault(video_id, []).append(caption)
    return captions


def check_split(benchmark: str, split: str, splits: Any) -> None:
    if split not in splits:
        raise ValueError(f"{benchmark} has splits {', '.join(splits)}; got {split!r}")


def require_file(path: Path) -> None:
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (one id or file name per line)."""
    require_file(path)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_json(path: Path) -> Any:
    require_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header that must include ``columns``; every row must be complete."""
    require_file(path)
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        absent = [name for name in columns if name not in (reader.fieldnames or [])]
        if absent:
            raise AnnotationError(f"{path}: header {reader.fieldnames} lacks column(s) {absent}")
        rows = []
        for row in reader:
            # DictReader pads short rows with None and gathers surplus fields under the key None.
            if None in row or None in row.values():
                raise AnnotationError(f"{path}, line {reader.line_num}: expected {len(reader.fieldnames)} fields")
            rows.append(row)
    return rows


def read_tsv(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a header-less tab-separated file with exactly ``fields`` columns."""
    require_file(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        values = line.rstrip("\r\n").split("\t")
        if len(values) != fields:
            raise AnnotationError(f"{path}, line {number}: expected {fields} tab-separated fields, found {len(values)}")
        rows.append((number, values))
    return rows


def parse_bool(value: str, where: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise AnnotationError(f"{where}: expected true/false, found {value!r}")
