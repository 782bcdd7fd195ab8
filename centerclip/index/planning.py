"""Planning a run against the store as its inputs are listed: the listing runs in a thread ahead
of the planner (``ahead``), each chunk is planned with lookups of its own keys (``plan``), and what
is left to index comes out in waves (``waves``), each one Ray Data run of the engine. The driver so
holds a few chunks of a library of any size, and decoding starts after its first chunk."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .listing import InputStream, Source
    from .store import Store

log = logging.getLogger("centerclip.index")
T = TypeVar("T")


@dataclass(frozen=True)
class Work:
    todo: list[Source]  # new or changed, or failed before and retried
    indexed: int  # unchanged and in the table
    failed_before: int  # unchanged and in the errors table: not tried again


def plan(store: Store, sources: list[Source], errors: list[dict], retry_errors: bool) -> Work:
    """Bring the store in line with one chunk of the listing before any of it is decoded, and say
    what is left to do. Each lookup is of the chunk's keys (index lookups once the table has its
    key indexes), so a re-run over millions of indexed videos never reads them all at once."""
    store.record_errors(errors)  # probe failures; their uris lose any rows
    generations = store.video_ids(source.uri for source in sources)
    # Rows indexed before thumbnails existed are indexed again, and so gain one. Looked up by uri
    # again, not by id: a chunk's uris are neighbours in the uri index (a folder's files, a
    # prefix's keys), where its ids, digests, would touch every page of the id index at once.
    current = [source for source in sources if source.key in generations.get(source.uri, ())]
    thumbnailed = store.video_ids((source.uri for source in current), with_thumbnail=True) if current else {}
    indexed = {source.key for source in current if source.key in thumbnailed.get(source.uri, ())}
    # Older generations beside an indexed one (tables written before replacing upserts).
    store.delete_videos({old for source in sources if source.key in indexed
                         for old in generations[source.uri] - {source.key}})
    pending = [source for source in sources if source.key not in indexed]
    failed = {} if retry_errors else store.failed_keys(source.uri for source in pending)
    todo = [source for source in pending if failed.get(source.uri) != source.key]
    return Work(todo, len(indexed), len(pending) - len(todo))


@dataclass
class Planned:
    """What the listing found so far, and what planning made of it."""

    found: int = 0
    indexed: int = 0
    failed_before: int = 0
    todo: int = 0
    probe_errors: int = 0


# Videos per Ray Data run ("wave"): the listing and planning go on while a wave is indexed, and a
# wave's sources are all the driver holds of them. Each wave starts its actor pools anew (seconds),
# against minutes of work at this size. The first wave starts early, so a first row comes soon.
WAVE = 16_384
FIRST_WAVE_S = 5.0
# The driver looks each chunk's keys up in the key indexes (BTREE) once: LanceDB's default cache
# would keep every index page a run touched (about 75 MiB per million keys, measured); with this
# bound the driver stays flat, and lookups were as fast (1M keys in chunks: 14.5 s, against 13.5).
PLAN_INDEX_CACHE = 32 << 20


def waves(store: Store, stream: InputStream, retry_errors: bool, planned: Planned, size: int = WAVE,
          first_after: float = FIRST_WAVE_S) -> Iterator[list[Source]]:
    """The sources left to index, in waves of about ``size``: listed in a thread ahead of the
    caller, planned chunk by chunk against the store here."""
    store.reconcile()  # a run killed between a write's two commits left an error beside rows
    todo: list[Source] = []
    began, started = time.monotonic(), False
    for sources, errors in ahead(stream.chunks(), depth=2):
        work = plan(store, sources, errors, retry_errors)
        planned.found += len(sources)
        planned.probe_errors += len(errors)
        planned.indexed += work.indexed
        planned.failed_before += work.failed_before
        planned.todo += len(work.todo)
        todo += work.todo
        if len(todo) >= size or (todo and not started and time.monotonic() - began >= first_after):
            started = True
            yield todo
            todo = []
    log.info("%d videos found, %d already indexed, %d failed before (--retry-errors tries them again), %d to index; "
             "%d inputs are not videos or cannot be read", planned.found, planned.indexed, planned.failed_before,
             planned.todo, planned.probe_errors)
    if todo:
        yield todo


def ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """The items of ``items``, produced by a thread up to ``depth`` items ahead of the caller; an
    error there is raised here. A caller that stops early stops the thread at its next item."""
    queue: Queue = Queue(depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.2)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((end, None))
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            queue.put((end, error))

    thread = threading.Thread(target=produce, name="centerclip-listing", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item, error = queue.get(timeout=0.2)  # a timeout keeps the wait open to Ctrl-C
            except Empty:
                continue
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
