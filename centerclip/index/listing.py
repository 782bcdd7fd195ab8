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
listing also says which uris it speaks for (``Listing.covers``): what ``--prune`` may remove.
"""

from __future__ import annotations

import csv
import errno
import fnmatch
import glob
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow.fs
import pyarrow.parquet as pq

from ..media.containers import SNIFF_BYTES, media_type
from ..media.sources import path_from_uri, uri_from_path
from .keys import video_key

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


def version_now(uri: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of the file behind ``uri`` now, as the listing reads them
    (None when it cannot be read): the decode stage compares them with the listed ones."""
    local = path_from_uri(uri)
    try:
        if local is not None:
            status = os.stat(local)
            return status.st_size, status.st_mtime_ns
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        return (info.size or 0, info.mtime_ns or 0) if info.type == pyarrow.fs.FileType.File else None
    except (OSError, ValueError):
        return None


@dataclass
class Listing:
    sources: list[Source] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"uri", "stage": "probe", "reason"}
    # Predicates on uris: a folder, a glob, a prefix speaks for every uri under it. Manifests and
    # single files speak for nothing more than what they list.
    scopes: list[Callable[[str], bool]] = field(default_factory=list)
    # Folders that could not be read this time: what was under them is unknown, not gone.
    unreadable: list[Callable[[str], bool]] = field(default_factory=list)

    def covers(self, uri: str) -> bool:
        return any(scope(uri) for scope in self.scopes) and not any(folder(uri) for folder in self.unreadable)

    def uris(self) -> set[str]:
        return {source.uri for source in self.sources} | {error["uri"] for error in self.errors}


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
    return _Candidate(uri, status.st_size, status.st_mtime_ns, (status.st_dev, status.st_ino), link)


def _walk(folder: bytes, listing: Listing) -> Iterator[_Candidate | dict]:
    """Every entry under a local folder, in name order, without following symlinks to folders."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        reason = "permission denied" if isinstance(error, PermissionError) else f"cannot list: {error.strerror}"
        listing.unreadable.append(_under(folder))
        yield _error(uri_from_path(folder), reason)
        return
    for entry in entries:
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
    if path.endswith(".parquet"):
        yield from enumerate(pq.read_table(path).to_pylist(), 1)
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
                found = _Candidate(found.uri, found.size, found.mtime_ns, found.identity, found.symlink,
                                   f"id:{identity}" if identity else None, metadata, where)
            yield found


def _remote(uri: str, listing: Listing | None = None) -> Iterator[_Candidate | dict]:
    """An object or, given the listing to add its scope to, a prefix (whose files are sniffed)."""
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.Directory and listing is not None:
            prefix = uri.rstrip("/")
            entries = sorted(fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True)), key=lambda e: e.path)
            listing.scopes.append(lambda other: other.startswith(prefix + "/"))
        else:
            prefix, entries = None, [info]
    except (OSError, ValueError) as error:  # unknown scheme, no credentials, unreachable store
        yield _error(uri, f"cannot list: {error}")
        return
    named = prefix is None
    for entry in entries:
        entry_uri = f"{prefix}/{os.path.relpath(entry.path, path)}" if prefix else uri
        if entry.type == pyarrow.fs.FileType.NotFound:
            yield _error(entry_uri, "no such file or folder")
        elif entry.type == pyarrow.fs.FileType.Directory:
            if named:
                yield _error(entry_uri, "not a regular file: folder")
        elif entry.type != pyarrow.fs.FileType.File:
            yield _error(entry_uri, "not a regular file")
        elif named or entry.path.lower().endswith(VIDEO_EXTENSIONS) or _sniff_remote(fs, entry.path):
            yield _Candidate(entry_uri, entry.size or 0, entry.mtime_ns or 0, None)
        else:
            yield _error(entry_uri, "unknown extension and not a video container" if entry.size else "empty file")


def _sniff_remote(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    try:
        with fs.open_input_stream(path) as stream:
            return sniff(stream.read(SNIFF_BYTES))
    except OSError:
        return False


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


def list_inputs(inputs: list[str]) -> Listing:
    """Expand folders (recursively), globs, manifests (.csv/.parquet/.jsonl with a ``uri`` column,
    optional ``id`` and metadata columns), object-store prefixes and single files into sources with
    stable keys (from uri or id, size and modification time). Every entry that cannot be indexed
    comes back as an error with stage "probe" and a reason; two names of one local file (symlinks,
    hard links) are one source, preferring a name that is not a symlink, the others errors."""
    listing = Listing()
    candidates: list[_Candidate] = []
    for item in inputs:
        for found in _expand(item, listing):
            (listing.errors.append if isinstance(found, dict) else candidates.append)(found)
    chosen: dict[Any, _Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: c.symlink):  # stable: keeps the listing order
        first = chosen.setdefault(candidate.identity or candidate.uri, candidate)
        if first is candidate:
            continue
        if candidate.origin is not None:  # a manifest line ends somewhere visible: its own error, under its row
            listing.errors.append(_error(candidate.origin, f"duplicate: {candidate.uri} is the same file as "
                                                           f"{first.origin or first.uri}, indexed once"))
        elif first.uri != candidate.uri:
            listing.errors.append(_error(candidate.uri, f"duplicate: same file as {first.uri}"))
    order = {id(candidate): rank for rank, candidate in enumerate(candidates)}
    for candidate in sorted(chosen.values(), key=lambda c: order[id(c)]):
        listing.sources.append(Source(candidate.uri, video_key(candidate.key_name or candidate.uri, candidate.size,
                                                               candidate.mtime_ns), candidate.metadata,
                                      candidate.size, candidate.mtime_ns))
    listed = {source.uri for source in listing.sources}
    listing.errors = list({error["uri"]: error for error in listing.errors if error["uri"] not in listed}.values())
    return listing
