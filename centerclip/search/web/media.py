"""Streaming an indexed file over HTTP with byte ranges (RFC 9110 section 14), from local disk or
any object store pyarrow.fs opens. Range requests are what a <video> element sends to start
playback part-way through a file and to seek, so they must return exactly the bytes asked for."""

from __future__ import annotations

import functools
import mimetypes
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow.fs

from ...media.sources import path_from_uri

CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(ValueError):
    """A Range header none of whose bytes are in the file (answered 416)."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def requested_span(header: str | None, size: int) -> Span | None:
    """The single byte range a Range header asks for, clipped to the file; None for the whole
    file (no header, a header we do not parse, or several ranges: a server may answer those with
    the whole file). Raises RangeNotSatisfiable when the range starts past the end."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # "bytes=-N": the last N bytes
        if int(match[2]) == 0:
            raise RangeNotSatisfiable("an empty suffix range")
        return Span(max(0, size - int(match[2])), size - 1) if size else None
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if match[2] and int(match[2]) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at byte {start} of a {size}-byte file")
    return Span(start, end)


def open_uri(uri: str) -> tuple[Callable[[], BinaryIO], int]:
    """(a function that opens the indexed file for reading, its size); FileNotFoundError when it is
    gone. Local files are read with ``open``, whatever their names' bytes: a name that is not UTF-8
    is stored as a percent-encoded ``file://`` uri (``path_from_uri``), which pyarrow cannot open."""
    local = path_from_uri(uri)
    if local is not None:
        info = os.stat(local)  # FileNotFoundError (an OSError) when it is gone
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(uri)
        return functools.partial(open, local, "rb"), info.st_size
    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(uri)
    return functools.partial(filesystem.open_input_file, path), info.size


def read_span(open_file: Callable[[], BinaryIO], span: Span) -> Iterator[bytes]:
    """The span's bytes in chunks; the file is opened when iteration starts and closed at its end."""
    with open_file() as file:
        file.seek(span.start)
        remaining = span.length
        while remaining > 0:
            data = file.read(min(CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


def content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
