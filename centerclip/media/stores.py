"""Object stores: S3 (and S3-compatible servers), Google Cloud Storage and Azure Blob Storage,
through obstore, the Python face of the Rust ``object_store`` crate that LanceDB itself runs on. So
inputs, the media the service streams and the db read the same standard variables (``AWS_*``,
``GOOGLE_*``, ``AZURE_*``) the same way, and listings come in pages.

A stored uri of an object is ``scheme://bucket/key`` with the key exactly as the store holds it,
not percent-encoded: the form the AWS, gcloud and az command lines print and take. Everything after
the bucket's ``/`` is the key, so a space, ``%``, ``#``, ``?``, ``+`` or ``=`` is part of the name and
never URL syntax. Uris are split here and nowhere else, and never handed to a URL parser.
"""

from __future__ import annotations

import datetime
import functools
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

SCHEMES = ("s3", "gs", "az")
# Fail in seconds, not in object_store's default of up to 3 minutes of retries.
_RETRY = {"max_retries": 3, "retry_timeout": datetime.timedelta(seconds=20)}
PAGE = 1000  # objects per listing page: what S3 returns per request


class StoreError(ValueError):
    """A store that cannot be used as asked; the message is one line naming the bucket or key."""


UNADDRESSABLE = ("its key has an empty, '.' or '..' part or a control character, which the store client "
                 "(object_store, as LanceDB's) cannot address: rename the object")


@dataclass(frozen=True)
class Entry:
    uri: str
    size: int
    mtime_ns: int
    # The store's version tag of the object (S3's ETag): a rewrite of the same size changes it.
    # None: listed, but a key the client cannot address (UNADDRESSABLE).
    tag: str | None


def is_object(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in SCHEMES and "://" in uri


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some key#1.mp4`` -> (``s3://bucket``, ``some key#1.mp4``)."""
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    if scheme.lower() not in SCHEMES or not bucket:
        raise StoreError(f"{uri}: not an object-store uri (s3://bucket/key, gs://bucket/key, az://container/blob)")
    return f"{scheme.lower()}://{bucket}", key


def join(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")


def _allow_http(scheme: str) -> bool:
    """An endpoint the user named with http:// (a MinIO or moto on their own network) is meant."""
    endpoint = _endpoint() if scheme == "s3" else None
    return bool(endpoint and endpoint.lower().startswith("http://"))


def lance_options(uri: str) -> dict[str, str]:
    """LanceDB's ``storage_options`` for a db at ``uri``. LanceDB reads the AWS variables itself, but
    refuses an http:// endpoint unless allowed; the region and endpoint are passed on explicitly
    so that the db and the inputs use the same ones."""
    if not is_object(uri):
        return {}
    scheme = uri.split("://", 1)[0].lower()
    options = _s3_settings() if scheme == "s3" else {}
    if _allow_http(scheme):
        options["allow_http"] = "true"
    return options


def _s3_settings() -> dict[str, str]:
    """The S3 region and endpoint the standard variables set (those set)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return {**({"region": region} if region else {}), **({"endpoint": _endpoint()} if _endpoint() else {})}


ENVIRONMENT_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def environment() -> dict[str, str]:
    """The store settings of this process (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``): what the indexer's
    decoders need to read the same objects on any node (they go with the job as Ray's env_vars)."""
    return {name: value for name, value in os.environ.items() if name.startswith(ENVIRONMENT_PREFIXES)}


def _store(bucket: str) -> Any:
    """The client of one bucket, built once per bucket and settings."""
    return _client(bucket, tuple(sorted(environment().items())))


@functools.lru_cache(maxsize=64)
def _client(bucket: str, settings: tuple) -> Any:
    from obstore.store import from_url

    scheme = bucket.split("://", 1)[0]
    config = _s3_settings() if scheme == "s3" else {}
    try:
        return from_url(bucket, config=config or None, client_options={"allow_http": _allow_http(scheme), "connect_timeout": "10s"},
                        retry_config=_RETRY)
    except Exception as error:  # noqa: BLE001 - obstore's configuration errors
        raise StoreError(explain(error, bucket)) from None


def explain(error: BaseException, uri: str) -> str:
    """One line that names ``uri`` and what the store said, in words a user can act on."""
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    codes = re.findall(r"<Code>(\w+)</Code>", text)
    code = codes[0] if codes else ""
    bucket = split(uri)[0] if is_object(uri) else uri
    if code == "NoSuchBucket" or "bucket does not exist" in text.lower():
        return f"{uri}: no such bucket {bucket}"
    if isinstance(error, FileNotFoundError) or code in ("NoSuchKey", "NotFound"):
        return f"{uri}: no such object"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken") or \
            type(error).__name__ == "UnauthenticatedError":
        return f"{uri}: the store refused the credentials ({code or 'unauthenticated'}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile)"
    if code in ("AccessDenied", "AllAccessDisabled") or isinstance(error, PermissionError) or "403 Forbidden" in text:
        if "169.254.169.254" in text or "api/token" in text:
            return f"{uri}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, or an instance role)"
        return f"{uri}: access denied ({code or '403'}): the credentials may not read this bucket or key"
    if "error sending request" in text or "dns error" in text or "Connection refused" in text or "timed out" in text:
        where = _endpoint() if uri.startswith("s3") and _endpoint() else "the store's endpoint"
        return f"{uri}: cannot reach {where} (is AWS_ENDPOINT_URL right, and the server up?)"
    if "builder error" in text and "http://" in text:
        return f"{uri}: the endpoint is plain http: name it in AWS_ENDPOINT_URL as http://host:port"
    if code:
        return f"{uri}: the store answered {code}"
    return f"{uri}: {first[:200]}"


def _entry(bucket: str, meta: dict) -> Entry:
    modified = meta.get("last_modified")
    mtime_ns = int(modified.timestamp() * 1e9) if modified else 0
    return Entry(join(bucket, meta["path"]), int(meta.get("size") or 0), mtime_ns, str(meta.get("e_tag") or ""))


def head(uri: str) -> Entry:
    """The object at ``uri``; FileNotFoundError when there is none, StoreError for anything else."""
    import obstore

    bucket, key = split(uri)
    try:
        return _entry(bucket, obstore.head(_store(bucket), key))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such object") from None
    except Exception as error:  # noqa: BLE001 - obstore raises its own kinds
        raise StoreError(explain(error, uri)) from None


def pages(prefix_uri: str) -> Iterator[list[Entry]]:
    """The objects under a prefix (``s3://bucket/folder/`` or ``s3://bucket``), a page at a time, in
    key order: memory stays a page however many objects the prefix holds. Keys that end in "/"
    (folder markers some tools write) are left out."""
    import obstore

    bucket, key = split(prefix_uri)
    prefix = key.rstrip("/")
    last = None
    try:
        for page in obstore.list(_store(bucket), prefix=prefix or None, chunk_size=PAGE):
            entries = [_entry(bucket, meta) for meta in page if not meta["path"].endswith("/")]
            last = entries[-1].uri if entries else last
            yield entries
    except Exception as error:  # noqa: BLE001
        if "invalid path" not in str(error) or not bucket.startswith("s3://"):
            raise StoreError(explain(error, prefix_uri)) from None
        # A key object_store cannot parse ("a//b", "../x") ends its listing; S3's own SDK lists it.
        yield from _pages_by_pyarrow(bucket, prefix, after=last)


def _addressable(key: str) -> bool:
    parts = key.split("/")
    return all(part not in ("", ".", "..") and not any(ord(char) < 32 or ord(char) == 127 for char in part)
               for part in parts)


def _pages_by_pyarrow(bucket: str, prefix: str, after: str | None) -> Iterator[list[Entry]]:
    """The rest of a listing (keys after ``after``) through pyarrow's S3 client, which lists any
    key: keys that object_store cannot address come back with tag None, the others as ``head``
    says. pyarrow lists a prefix whole, in memory: only for a bucket that holds such keys."""
    import pyarrow.fs

    endpoint = _endpoint()
    scheme, _, host = endpoint.partition("://") if endpoint else ("https", "", None)
    filesystem = pyarrow.fs.S3FileSystem(endpoint_override=host or None, scheme=scheme, region=_s3_settings().get("region"))
    root = bucket.split("://", 1)[1] + (f"/{prefix}" if prefix else "")
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    except OSError as error:
        raise StoreError(explain(error, join(bucket, prefix))) from None
    page: list[Entry] = []
    for info in sorted(infos, key=lambda info: info.path):
        uri = f"{bucket.split('://', 1)[0]}://{info.path}"
        if info.type != pyarrow.fs.FileType.File or (after is not None and uri <= after):
            continue
        if not _addressable(split(uri)[1]):
            page.append(Entry(uri, info.size or 0, info.mtime_ns or 0, None))
        else:
            try:
                page.append(head(uri))
            except FileNotFoundError:  # a folder marker ("dir/"), which pyarrow lists as a file "dir"
                continue
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def is_prefix(uri: str) -> bool:
    """Whether ``uri`` names a prefix that holds objects (a "folder"), rather than one object."""
    key = split(uri)[1]
    return not key or key.endswith("/") or _holds_objects(uri)


def _holds_objects(uri: str) -> bool:
    """Whether any object lies under ``uri`` taken as a folder (a listing of one object)."""
    import obstore

    bucket, key = split(uri)
    try:
        return bool(next(iter(obstore.list(_store(bucket), prefix=key.rstrip("/") or None, chunk_size=1)), []))
    except Exception as error:  # noqa: BLE001
        raise StoreError(explain(error, uri)) from None


def open_reader(uri: str) -> BinaryIO:
    """A seekable reader of the object at ``uri`` (reads are ranged GETs)."""
    import obstore

    bucket, key = split(uri)
    try:
        return _Reader(obstore.open_reader(_store(bucket), key))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such object") from None
    except Exception as error:  # noqa: BLE001
        raise StoreError(explain(error, uri)) from None


class _Reader(io.RawIOBase):
    """obstore's reader as a Python binary file: bytes out, a context manager, seekable."""

    def __init__(self, file: Any):
        super().__init__()
        self._file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return bytes(self._file.read(None if size is None or size < 0 else size))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def read_head(uri: str, count: int, size: int) -> bytes:
    """The first ``count`` bytes of an object of ``size`` bytes (all of it when it is shorter: a
    range past an object's end is an error)."""
    import obstore

    bucket, key = split(uri)
    try:
        return bytes(obstore.get_range(_store(bucket), key, start=0, length=min(count, size)))
    except Exception as error:  # noqa: BLE001
        raise StoreError(explain(error, uri)) from None


def check_db(uri: str) -> None:
    """Raise StoreError with one line when the bucket of a db at ``uri`` cannot be listed (no
    such bucket, no credentials, unreachable), before LanceDB reports it in its own words."""
    _holds_objects(uri)
