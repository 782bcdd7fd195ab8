"""Where videos come from: local paths, URIs and pyarrow filesystems, checked before any decoder
sees them, and the error every decoding failure becomes. Part of ``centerclip.media.decoding``."""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import urllib.parse
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Iterator

import pyarrow.fs

from . import stores


class VideoDecodeError(Exception):
    """A video that cannot be used; ``reason`` is short and specific (e.g. "empty file")."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        # Exceptions pickle their message only; the worker process must send path and reason.
        return type(self), (self.path, self.reason)


def brief(error: BaseException) -> str:
    """The informative part of a library error: decord prefixes a time and a source location."""
    text = (getattr(error, "strerror", None) or str(error)).strip()
    first_line = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", first_line)[:160]


@contextmanager
def local_file(path: str | os.PathLike, filesystem: pyarrow.fs.FileSystem | None, max_bytes: int) -> Iterator[str]:
    """Yield a local path of a regular, non-empty file of at most ``max_bytes``.

    ``path`` is local, a URI (``s3://``, ``gs://``, ``file://``...) or a path inside
    ``filesystem``. Files that are not on the local disk are copied to a temporary file, deleted on
    exit: decord and FFmpeg need a seekable local file, and a bounded copy is simpler and safer
    than teaching them pyarrow streams. A VideoDecodeError raised inside the block is re-raised
    under ``path``, so errors name what the caller asked for, not a temporary copy.
    """
    name = os.fspath(path)
    try:
        with _local_copy(name, filesystem, max_bytes) as local:
            yield local
    except VideoDecodeError as error:
        raise VideoDecodeError(name, error.reason) from None


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def uri_from_path(path: str | bytes) -> str:
    """How a local absolute path is stored: itself when its bytes are valid UTF-8, else a
    ``file://`` URI with the bytes percent-encoded (RFC 8089), so every name is stored reversibly
    and no stored path is ambiguous (stored paths start with "/", never with "file:")."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "file://" + urllib.parse.quote_from_bytes(raw, safe="/")


def path_from_uri(uri: str) -> str | None:
    """The local path a uri names (a ``str`` that ``os`` functions take, even for names that are
    not UTF-8), or None for a uri of another file system (s3://, gs://...)."""
    if not _URI.match(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    return os.fsdecode(urllib.parse.unquote_to_bytes(parts.path))


def display_name(uri: str) -> str:
    """The file's name as a person reads it, from its stored uri: the last part of the path,
    exactly as the file system holds it (``100%.mp4`` stays ``100%.mp4``, ``%2e%2e%2f.mp4`` is not
    decoded), with bytes that are not UTF-8 shown as ``\\xNN``."""
    local = path_from_uri(uri)
    if local is None:  # an object store's key: stored as the store lists it
        return uri.rstrip("/").rsplit("/", 1)[-1]
    return os.fsencode(local).rsplit(b"/", 1)[-1].decode("utf-8", "backslashreplace")


@contextmanager
def _local_copy(path: str, filesystem: pyarrow.fs.FileSystem | None, max_bytes: int) -> Iterator[str]:
    if filesystem is None and path_from_uri(path) is not None:
        path = path_from_uri(path)
    if filesystem is None and stores.is_object(path):  # s3://, gs://, az://: keys taken as they are
        with _object_copy(path, max_bytes) as local:
            yield local
        return
    try:
        if filesystem is None and _URI.match(path):
            filesystem, path = pyarrow.fs.FileSystem.from_uri(path)
        info = None if filesystem is None else filesystem.get_file_info(path)
    except (OSError, ValueError) as error:  # unknown scheme, no credentials, unreachable store
        raise VideoDecodeError(path, f"cannot open: {brief(error)}") from None
    if filesystem is None or isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        # An absolute path also keeps FFmpeg from reading "name:rest" as a protocol.
        local = os.path.abspath(path)
        _check_local(local, max_bytes)
        with _utf8_name(local) as name:
            yield name
        return
    if info.type == pyarrow.fs.FileType.NotFound:
        raise VideoDecodeError(path, "no such file")
    if info.type != pyarrow.fs.FileType.File:
        raise VideoDecodeError(path, "not a regular file")
    _check_size(path, info.size, max_bytes)
    with filesystem.open_input_stream(path) as source:
        with _copied(path, source, max_bytes) as local:
            yield local


@contextmanager
def _object_copy(uri: str, max_bytes: int) -> Iterator[str]:
    try:
        _check_size(uri, stores.head(uri).size, max_bytes)
        reader = stores.open_reader(uri)
    except FileNotFoundError:
        raise VideoDecodeError(uri, "no such file") from None
    except stores.StoreError as error:
        raise VideoDecodeError(uri, f"cannot open: {error}") from None
    with reader, _copied(uri, reader, max_bytes) as local:
        yield local


@contextmanager
def _copied(path: str, source, max_bytes: int) -> Iterator[str]:
    """A temporary local copy of what ``source`` reads, at most ``max_bytes`` (the listing may be stale)."""
    with tempfile.NamedTemporaryFile(suffix=_suffix(path)) as copy:
        copied = 0
        while chunk := source.read(1 << 22):
            copied += len(chunk)
            _check_size(path, copied, max_bytes)
            copy.write(chunk)
        copy.flush()
        yield copy.name


def _suffix(path: str) -> str:
    """The name's extension, when it is a plain one: the decoders' guess of the format may use it."""
    suffix = PurePosixPath(path).suffix
    return suffix if suffix.isascii() and suffix[1:].isalnum() else ""


@contextmanager
def _utf8_name(path: str) -> Iterator[str]:
    """``path``, or a symlink to it with a UTF-8 name: decoders take names as UTF-8 strings."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="centerclip-") as folder:
            suffix = os.path.splitext(path)[1]
            link = os.path.join(folder, "video" + (suffix if suffix.isascii() else ""))
            os.symlink(os.fsencode(path), link)
            yield link
    else:
        yield path


def _check_local(path: str, max_bytes: int) -> None:
    try:
        status = os.stat(path)  # follows symlinks: we judge what the decoder would open
    except FileNotFoundError:
        raise VideoDecodeError(path, "no such file") from None
    except OSError as error:
        reason = "symlink loop" if error.errno == errno.ELOOP else f"cannot stat: {error.strerror}"
        raise VideoDecodeError(path, reason) from None
    # Anything else (a named pipe, a device, a directory) hangs or confuses both decoders.
    if not stat.S_ISREG(status.st_mode):
        raise VideoDecodeError(path, "not a regular file")
    _check_size(path, status.st_size, max_bytes)


def _check_size(path: str, size: int, max_bytes: int) -> None:
    if size == 0:
        raise VideoDecodeError(path, "empty file")
    if size > max_bytes:
        raise VideoDecodeError(path, f"too large: {size} bytes exceeds the limit of {max_bytes}")
