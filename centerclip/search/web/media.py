"""Serving an indexed file over HTTP, from local disk or an object store (``media/stores.py``).

Starlette's FileResponse does the HTTP: byte ranges (what a <video> element sends to start part-way
and to seek), If-Range, HEAD, ETag and Last-Modified; Starlette's StaticFiles decides 304s. What is
ours is where the bytes come from and what they are said to be. A library is untrusted input, so
media is only ever media: the type comes from the container the file's first bytes hold (a video
named ``page.html`` is ``video/mp4``; bytes that are no video container are
``application/octet-stream``), and the response is sandboxed by its Content-Security-Policy so
that even a file crafted to parse as HTML runs no script on the service's origin.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Receive, Scope, Send

from ...media import stores
from ...media.containers import SNIFF_BYTES, media_type
from ...media.sources import display_name, path_from_uri

# Rendered on its own (a user opens the media URL in a tab), a response under this policy is a
# sandboxed document of a unique origin that may load and run nothing.
MEDIA_POLICY = "sandbox; default-src 'none'"
_CONDITIONS = StaticFiles(check_dir=False)  # Starlette's own If-None-Match / If-Modified-Since rules


@dataclass(frozen=True)
class MediaFile:
    open: Callable[[], BinaryIO]
    size: int
    modified: float  # seconds since the epoch: Last-Modified and the ETag come from it and the size
    name: str


def open_uri(uri: str) -> MediaFile:
    """The indexed file behind a stored uri; FileNotFoundError when it is gone or not a file.
    Local files are opened with ``open``, whatever their names' bytes: a name that is not UTF-8 is
    stored as a percent-encoded ``file://`` uri (``path_from_uri``). Objects are read by key, with
    ranged GETs, as ``stores`` takes them."""
    local = path_from_uri(uri)
    if local is not None:
        info = os.stat(local)  # FileNotFoundError (an OSError) when it is gone
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(uri)
        return MediaFile(functools.partial(open, local, "rb"), info.st_size, info.st_mtime, display_name(uri))
    if not stores.is_object(uri):
        raise FileNotFoundError(f"{uri}: not a file or object this service reads")
    entry = stores.head(uri)  # FileNotFoundError when it is gone, StoreError when the store will not say
    return MediaFile(functools.partial(stores.open_reader, uri), entry.size, entry.mtime_ns / 1e9, display_name(uri))


_TYPES: dict[tuple[str, int, float], str] = {}  # (uri, size, modified) -> media type


def sniffed_type(uri: str, media: MediaFile) -> str:
    """The media type of the container the file holds, read once per version of the file."""
    key = (uri, media.size, media.modified)
    if key not in _TYPES:
        if len(_TYPES) >= 4096:
            _TYPES.clear()
        with media.open() as file:
            _TYPES[key] = media_type(file.read(SNIFF_BYTES)) or "application/octet-stream"
    return _TYPES[key]


class MediaResponse(FileResponse):
    """Starlette's FileResponse over a file that ``MediaFile.open`` opens, local or in a store."""

    def __init__(self, media: MediaFile, kind: str, headers: dict[str, str]):
        headers = {**headers, "Content-Security-Policy": MEDIA_POLICY, "X-Content-Type-Options": "nosniff"}
        # The stat FileResponse would take itself: regular file, size, modification time.
        status = os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, media.size, media.modified, media.modified,
                                 media.modified))
        super().__init__(media.name, media_type=kind, headers=headers, filename=media.name,
                         content_disposition_type="inline", stat_result=status)
        self._open = media.open

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        file = anyio.AsyncFile(await anyio.to_thread.run_sync(self._open))
        try:
            yield file
        finally:
            with anyio.CancelScope(shield=True):  # close even when the client went away
                await file.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "pathsend" hands the server a path to open itself: only our opener knows the file.
        extensions = {key: value for key, value in scope.get("extensions", {}).items() if key != "http.response.pathsend"}
        await super().__call__({**scope, "extensions": extensions}, receive, send)


def media_response(media: MediaFile, kind: str, request_headers: Headers, headers: dict[str, str]) -> Response:
    """The answer to a GET or HEAD of an indexed file of type ``kind`` (``sniffed_type``): 304 when
    the client's copy is current."""
    response = MediaResponse(media, kind, headers)
    if _CONDITIONS.is_not_modified(response.headers, request_headers):
        return NotModifiedResponse(response.headers)
    return response
