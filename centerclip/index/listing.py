"""What to index: inputs (folders, globs, files, manifests, object-store prefixes) expanded into
sources with stable keys, and every entry that cannot be a source as a "probe" error with a
specific reason, so that no input is ever lost.

Local folders are walked with byte paths, so any name the file system holds is listed. A local
path is stored as its uri unchanged when it is valid UTF-8, and otherwise as a ``file://`` uri with
its bytes percent-encoded (``decode_source.uri_from_path``): reversible, and openable by anything
that opens file URIs.

Inside folders, globs and prefixes a file is a candidate when its extension is a video one or when
its first bytes are the signature of a video container (so ``.ogg`` Theora, or a video without an
extension, is not missed); files named one by one (a path, a manifest row) are always tried. The
listing also says which uris it speaks for (``covers``): what ``--prune`` may remove.

Listing streams (``InputStream.chunks``): folders are walked as the file system lists them (not
sorted: a folder of a million files would be a million entries in memory), object-store prefixes
come a page at a time, manifests a row at a time, and what was seen is kept as digests
(``seen.py``), so memory stays flat in the number of inputs.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import fnmatch
import glob
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from ..media import stores
from ..media.containers import SNIFF_BYTES, media_type
from ..media.sources import path_from_uri, uri_from_path
from .keys import video_key
from .seen import FirstSeen, digest

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif", ".ogv",
                    ".ts", ".m2ts", ".mts", ".3gp", ".3g2", ".vob", ".mxf", ".asf")
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".jsonl")
# A manifest row's extra columns are stored with its rows as JSON; exported spreadsheets carry
# descriptions and transcripts of hundreds of KiB. Past this, the row is refused (not the run).
MAX_METADATA_BYTES = 8 << 20
# The csv module refuses fields over 128 KiB by default; the bound that matters is the one above.
CSV_FIELD_LIMIT = 2**31 - 1

_KINDS = {stat.S_IFIFO: "named pipe", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
          stat.S_IFBLK: "block device", stat.S_IFDIR: "folder"}


@dataclass(frozen=True)
class Source:
    uri: str
    key: str
    metadata: str = "{}"  # JSON of the manifest's extra columns
    size: int = -1  # bytes and modification time as listed: the version the key names (-1: unknown)
    mtime_ns: int = -1
    tag: str = ""  # an object's version tag (S3's ETag); none for local files


def version_now(uri: str) -> tuple[int, int, str] | None:
    """(size, modification time in ns, version tag) of the file behind ``uri`` now, as the listing
    reads them (None when it cannot be read): the decode stage compares them with the listed ones."""
    local = path_from_uri(uri)
    try:
        if local is not None:
            status = os.stat(local)
            return status.st_size, status.st_mtime_ns, ""
        entry = stores.head(uri)
        return entry.size, entry.mtime_ns, entry.tag
    except (OSError, ValueError):
        return None


@dataclass
class Listing:
    """A whole listing in memory, for callers that list a few inputs (a search by a video file, the
    tests); the indexer streams ``InputStream.chunks`` instead."""

    sources: list[Source] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"uri", "stage": "probe", "reason"}
    covers: Callable[[str], bool] = lambda uri: False


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are the signature of a video container FFmpeg reads."""
    return media_type(head) is not None


def _error(uri: str, reason: str) -> dict:
    return {"uri": uri, "stage": "probe", "reason": reason}


@dataclass(frozen=True)
class _Candidate:
    uri: str
    size: int
    mtime_ns: int
    identity: tuple | None  # (device, inode) of a local file: two names of one file are one video
    symlink: bool = False
    key_name: str | None = None  # a manifest id, the key's stand-in for the uri
    metadata: str = "{}"
    origin: str | None = None  # the manifest row it came from (``manifest-uri#row=N``)
    links: int = 1  # hard links to a local file: more than one, and another name may list it again
    tag: str = ""  # an object's version tag


def _local(path: bytes, *, named: bool, entry: os.DirEntry | None = None) -> _Candidate | dict:
    """A local path -> a candidate, or a probe error saying why it cannot be one. ``named``: the
    user named this file (a path, a manifest row), so it is tried whatever its name and content.
    ``entry``: the path's entry in a folder listing, which already says whether it is a symlink
    (one stat call per walked file instead of two: each is a round trip on a network file system)."""
    uri = uri_from_path(path)
    try:
        link = entry.is_symlink() if entry is not None else stat.S_ISLNK(os.lstat(path).st_mode)
        status = entry.stat() if entry is not None else os.stat(path)
    except FileNotFoundError:
        return _error(uri, "broken symlink" if os.path.islink(path) else "no such file")
    except PermissionError:
        return _error(uri, "permission denied")
    except OSError as error:
        return _error(uri, "symlink loop" if error.errno == errno.ELOOP else f"cannot stat: {error.strerror}")
    if not stat.S_ISREG(status.st_mode):
        kind = _KINDS.get(stat.S_IFMT(status.st_mode), "unknown kind")
        return _error(uri, f"not a regular file: symlink to a {kind}" if link else f"not a regular file: {kind}")
    if not os.access(path, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
        return _error(uri, "permission denied")
    if not named and not path.lower().endswith(tuple(os.fsencode(e) for e in VIDEO_EXTENSIONS)):
        try:
            with open(path, "rb") as file:
                head = file.read(SNIFF_BYTES)
        except OSError as error:
            return _error(uri, f"cannot read: {error.strerror}")
        if not sniff(head):
            return _error(uri, "unknown extension and not a video container" if head else "empty file")
    return _Candidate(uri, status.st_size, status.st_mtime_ns, (status.st_dev, status.st_ino), link,
                      links=status.st_nlink)


def _walk(folder: bytes, listing: InputStream) -> Iterator[_Candidate | dict]:
    """Every entry under a local folder, in the order the file system lists them (a folder's
    entries are never all held at once), without following symlinks to folders."""
    try:
        scan = os.scandir(folder)
    except OSError as error:
        reason = "permission denied" if isinstance(error, PermissionError) else f"cannot list: {error.strerror}"
        listing.unreadable.append(_under(folder))
        yield _error(uri_from_path(folder), reason)
        return
    with scan:
        for entry in scan:
            path = os.path.join(folder, entry.name)
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(path, listing)
            else:
                yield _local(path, named=False, entry=entry)


def _under(folder: bytes) -> Callable[[str], bool]:
    prefix = folder.rstrip(b"/") + b"/"

    def covers(uri: str) -> bool:
        path = path_from_uri(uri)
        return path is not None and os.fsencode(path).startswith(prefix)
    return covers


def _matches_glob(pattern: str) -> Callable[[str], bool]:
    """Whether a path is one glob.glob(pattern, recursive=True) could return: matched part by part,
    ``**`` standing for any number of folders, wildcards not matching a leading dot."""
    wanted = os.fsencode(os.path.abspath(pattern)).split(b"/")

    def match(parts: list[bytes], path: list[bytes]) -> bool:
        if not parts:
            return not path
        if parts[0] == b"**":
            return any(match(parts[1:], path[skip:]) for skip in range(len(path) + 1))
        return bool(path) and (not path[0].startswith(b".") or parts[0].startswith(b".")) \
            and fnmatch.fnmatchcase(path[0], parts[0]) and match(parts[1:], path[1:])

    def covers(uri: str) -> bool:
        path = path_from_uri(uri)
        return path is not None and match(wanted, os.fsencode(path).split(b"/"))
    return covers


def _manifest_rows(path: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, row) for each row, or (row number, what is wrong with it)."""
    if path.endswith(".parquet"):  # a batch of rows at a time, however long the manifest
        batches = pq.ParquetFile(path).iter_batches(batch_size=16_384)
        yield from enumerate((row for batch in batches for row in batch.to_pylist()), 1)
    elif path.endswith(".jsonl"):
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        row = f"not a JSON object ({error.msg})"
                    yield number, row if isinstance(row, (dict, str)) else "not a JSON object"
    else:
        csv.field_size_limit(CSV_FIELD_LIMIT)
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as file:
            yield from enumerate(csv.DictReader(file), 2)  # row 1 is the header


def _manifest(path: str) -> Iterator[_Candidate | dict]:
    try:
        yield from _manifest_candidates(path)
    except (OSError, ValueError) as error:  # unreadable, not parquet, not CSV: the rest is lost, not the run
        yield _error(uri_from_path(os.path.abspath(path)), f"cannot read manifest: {error}")


def _manifest_candidates(path: str) -> Iterator[_Candidate | dict]:
    for number, row in _manifest_rows(path):
        where = f"{uri_from_path(os.path.abspath(path))}#row={number}"
        if isinstance(row, str):
            yield _error(where, row)
            continue
        uri = row.pop("uri", None)
        if not uri:
            yield _error(where, "no 'uri' value (columns: uri, optional id and metadata)")
            continue
        identity = row.pop("id", None)
        metadata = json.dumps({"id": identity, **row} if identity else row, sort_keys=True, default=str)
        if len(metadata.encode("utf-8", "surrogateescape")) > MAX_METADATA_BYTES:
            yield _error(where, f"its metadata columns hold {len(metadata) / 2**20:.1f} MiB of text; at most "
                                f"{MAX_METADATA_BYTES >> 20} MiB per row are stored (shorten or drop a column)")
            continue
        for found in _named(str(uri)):
            if isinstance(found, _Candidate):
                found = dataclasses.replace(found, key_name=f"id:{identity}" if identity else None, metadata=metadata,
                                            origin=where)
            yield found


def _remote(uri: str, listing: InputStream | None = None) -> Iterator[_Candidate | dict]:
    """An object or, given the listing to add its scope to, a prefix (whose objects are sniffed),
    a page at a time. A store that cannot be listed at all (no such bucket, no credentials, an
    unreachable endpoint) raises StoreError: nothing under it could be indexed."""
    if listing is None or not stores.is_prefix(uri):
        try:
            entry = stores.head(uri)
        except FileNotFoundError:
            yield _error(uri, "no such file or folder")
            return
        yield _Candidate(entry.uri, entry.size, entry.mtime_ns, None, tag=entry.tag)
        return
    prefix = uri if uri.endswith("/") or "/" not in uri.split("://", 1)[1] else uri + "/"
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    listing.scopes.append(lambda other: other.startswith(prefix))
    for page in stores.pages(uri):
        for entry in page:
            if entry.tag is None:  # listed, but not addressable by the store's client
                yield _error(entry.uri, stores.UNADDRESSABLE)
            elif entry.uri.lower().endswith(VIDEO_EXTENSIONS) or (entry.size and sniff(stores.read_head(entry.uri, SNIFF_BYTES, entry.size))):
                yield _Candidate(entry.uri, entry.size, entry.mtime_ns, None, tag=entry.tag)
            else:
                yield _error(entry.uri, "unknown extension and not a video container" if entry.size else "empty file")


def _named(item: str) -> Iterator[_Candidate | dict]:
    """A path or uri named by the user: a file is tried whatever its name or content."""
    local = path_from_uri(item) if "://" in item else item
    if local is None:
        yield from _remote(item)
        return
    path = os.fsencode(os.path.abspath(local))
    found = _local(path, named=True)
    if isinstance(found, dict) and found["reason"] == "no such file":
        found["reason"] = "no such file or folder"
    yield found


def _expand(item: str, listing: Listing) -> Iterator[_Candidate | dict]:
    local = path_from_uri(item) if "://" in item else item
    if local is None:
        yield from _remote(item, listing)
        return
    path = os.fsencode(os.path.abspath(local))
    # A path that exists is that path, even when its name has glob characters.
    if not os.path.lexists(path) and any(char in local for char in "*?["):
        matches = sorted(os.fsencode(os.path.abspath(match)) for match in glob.glob(os.fsencode(local), recursive=True))
        if not matches:  # perhaps an unmounted share: nothing to prune from
            yield _error(uri_from_path(os.path.abspath(local)), "the glob matches no file")
        else:
            listing.scopes.append(_matches_glob(local))
        for match in matches:
            if not os.path.isdir(match) or os.path.islink(match):
                yield _local(match, named=False)
        return
    if os.path.isdir(path):
        listing.scopes.append(_under(path))
        yield from _walk(path, listing)
    elif local.lower().endswith(MANIFEST_EXTENSIONS) and os.path.isfile(path):
        yield from _manifest(local)
    else:
        yield from _named(local)


CHUNK = 16_384  # sources and errors per chunk of a listing: what the indexer plans against the store at once
CHUNK_SECONDS = 2.0  # a slow listing (a network share, a store) still hands over what it found this often


@dataclass
class InputStream:
    """The inputs of a run, listed as they are read (``chunks``). Folders, globs and prefixes
    expand recursively; manifests (.csv/.parquet/.jsonl with a ``uri`` column, optional ``id`` and
    metadata columns) row by row; files are named alone. Sources have stable keys (from uri or id,
    size, modification time and an object's version tag). Every entry that cannot be indexed comes
    back as an error with stage "probe" and a reason. Two names of one local file (symlinks, hard
    links) are one source, the first listed, the others errors; a symlink to a file inside a
    listed folder is always the duplicate, since the file is listed under its own name."""

    inputs: list[str]
    # Predicates on uris: a folder, a glob, a prefix speaks for every uri under it. Manifests and
    # single files speak for nothing more than what they list.
    scopes: list[Callable[[str], bool]] = field(default_factory=list)
    # Folders that could not be read this time: what was under them is unknown, not gone.
    unreadable: list[Callable[[str], bool]] = field(default_factory=list)
    # Digests of every uri listed (sources and errors): 8 bytes an input.
    listed: FirstSeen = field(default_factory=lambda: FirstSeen(values=False))
    done: bool = False  # every input has been listed
    # Uris under this prefix are not inputs: the db's own files, when it lives among the videos.
    exclude: str | None = None

    def covers(self, uri: str) -> bool:
        return any(scope(uri) for scope in self.scopes) and not any(folder(uri) for folder in self.unreadable)

    def was_listed(self, uri: str) -> bool:
        return digest(uri) in self.listed

    def chunks(self, size: int = CHUNK, seconds: float = CHUNK_SECONDS) -> Iterator[tuple[list[Source], list[dict]]]:
        """(sources, errors) of at most ``size`` entries together, or of what ``seconds`` found."""
        sources: list[Source] = []
        errors: list[dict] = []
        began = time.monotonic()
        for found in self._entries():
            (errors if isinstance(found, dict) else sources).append(found)
            if len(sources) + len(errors) >= size or time.monotonic() - began >= seconds:
                yield sources, errors
                sources, errors, began = [], [], time.monotonic()
        self.done = True
        if sources or errors:
            yield sources, errors

    def _entries(self) -> Iterator[Source | dict]:
        first = FirstSeen()  # digest of a file's identity (or uri) -> the manifest row it came from
        origins: list[str] = []  # those rows' manifests
        names: dict[int, str] = {}  # the uri first listed for a file that has other names

        def described(key: int, candidate: _Candidate) -> str:
            row = first.get(key)
            if row is not None and row != -1:
                return f"{origins[row >> 40]}#row={row & ((1 << 40) - 1)}"
            if key in names:
                return names[key]
            if candidate.symlink:
                return uri_from_path(os.path.realpath(os.fsencode(path_from_uri(candidate.uri))))
            return candidate.uri

        for item in self.inputs:
            for found in _expand(item, self):
                if self.exclude and (found["uri"] if isinstance(found, dict) else found.uri).startswith(self.exclude):
                    continue
                if isinstance(found, dict):
                    if self.listed.add(digest(found["uri"])):
                        yield found
                    continue
                key = digest(repr(found.identity) if found.identity else found.uri)
                inside = found.symlink and found.origin is None and self.covers(described(key, found))
                # A walked file with one name, not a symlink, is kept by its uri alone (in listed):
                # another name of it can only be a symlink (kept by identity) or the same path again.
                plain = found.identity is not None and not found.symlink and found.links == 1 and found.origin is None
                if key in first or inside or self.was_listed(found.uri):  # listed (or to be listed) already
                    error, other = None, described(key, found)
                    if found.origin is not None:  # a manifest line ends somewhere visible: its own error, under its row
                        error = _error(found.origin, f"duplicate: {found.uri} is the same file as {other}, indexed once")
                    elif other != found.uri:
                        error = _error(found.uri, f"duplicate: same file as {other}")
                    if error and self.listed.add(digest(error["uri"])):
                        yield error
                    continue
                row = -1
                if found.origin is not None:
                    manifest, _, number = found.origin.rpartition("#row=")
                    if not origins or origins[-1] != manifest:
                        origins.append(manifest)
                    row = ((len(origins) - 1) << 40) | int(number)
                if not plain:
                    first.add(key, row)
                if found.symlink or found.links > 1:
                    names[key] = found.uri
                self.listed.add(digest(found.uri))
                yield Source(found.uri, video_key(found.key_name or found.uri, found.size, found.mtime_ns, found.tag),
                             found.metadata, found.size, found.mtime_ns, found.tag)


def list_inputs(inputs: list[str]) -> Listing:
    """The whole listing of ``inputs`` in memory (see InputStream): for a few inputs."""
    stream = InputStream(list(inputs))
    listing = Listing(covers=stream.covers)
    for sources, errors in stream.chunks():
        listing.sources += sources
        listing.errors += errors
    return listing
