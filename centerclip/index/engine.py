"""The indexing engine: list the job's inputs, plan them against the store, then decode, encode and
write what is left with Ray Data, whole videos at a time.

    list_inputs (listing.py) -> plan (store.py) -> DecodeVideos (CPU actors, decode_stage.py)
    -> EncodeClips (actor pool, GPU when present, encode_stage.py) -> WholeVideos -> write

torch, open_clip and the model are loaded by the encoder actors, not here: a driver that schedules
(or finds nothing to do) stays small and starts fast.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .job import IndexJob
from .pools import pools
from .sample import sample_inputs

if TYPE_CHECKING:
    from ..model.registry import EncoderConfig, ModelShape
    from .listing import Listing, Source
    from .store import Store

log = logging.getLogger("centerclip.index")


def write(store: Store, batch: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """Write a batch of encoded rows and record its failures; returns (videos, moments, errors).
    A batch holds all rows of each of its videos, so each video's rows replace every row the table
    held for its uri, in one commit; a failed video's uri loses its rows and gets an error row."""
    failed = batch["error"].astype(bool)
    if failed.any():
        store.record_errors({"uri": uri, "key": key, "stage": stage, "reason": reason} for uri, key, stage, reason
                            in zip(batch["uri"][failed], batch["id"][failed], batch["stage"][failed], batch["error"][failed]))
    good = ~failed
    if good.any():
        rows = {name: batch[name][good] for name in ("id", "video_id", "kind", "uri", "vector", "model", "schedule", "metadata",
                                                    "thumbnail")}
        for name in ("start", "end"):
            rows[name] = [None if math.isnan(value) else float(value) for value in batch[name][good]]
        store.upsert(rows, replace=True)
    kinds = batch["kind"][good]
    return int((kinds == "video").sum()), int((kinds == "moment").sum()), int(failed.sum())


@dataclass(frozen=True)
class Work:
    todo: list[Source]  # new or changed, or failed before and retried
    indexed: int  # unchanged and in the table
    failed_before: int  # unchanged and in the errors table: not tried again


def plan(store: Store, listing: Listing, retry_errors: bool) -> Work:
    """Bring the store in line with the listing before any decoding, and say what is left to do."""
    store.reconcile()  # a run killed between a write's two commits left an error beside rows
    store.record_errors(listing.errors)  # probe failures; their uris lose any rows
    generations = store.video_ids(source.uri for source in listing.sources)
    indexed = {source.key for source in listing.sources if source.key in generations.get(source.uri, ())}
    # Rows indexed before thumbnails existed are indexed again, and so gain one.
    indexed = store.indexed_keys(indexed, with_thumbnail=True)
    # Older generations beside an indexed one (tables written before replacing upserts).
    store.delete_videos({old for source in listing.sources if source.key in indexed
                         for old in generations[source.uri] - {source.key}})
    failed = {} if retry_errors else store.failed_keys()
    pending = [source for source in listing.sources if source.key not in indexed]
    todo = [source for source in pending if failed.get(source.uri) != source.key]
    return Work(todo, len(indexed), len(pending) - len(todo))


def failures(store: Store, uris: set[str], first: int = 20) -> dict:
    """The failed inputs among ``uris``: how many, how many per reason, and the first few."""
    from .progress import reason_group

    errors = [row for row in store.errors().sort_by("uri").to_pylist() if row["uri"] in uris]
    by_reason: dict[str, int] = {}
    for row in errors:
        by_reason[reason_group(row["reason"])] = by_reason.get(reason_group(row["reason"]), 0) + 1
    return {"count": len(errors), "by_reason": dict(sorted(by_reason.items(), key=lambda item: -item[1])),
            "first": [{name: row[name] for name in ("uri", "stage", "reason")} for row in errors[:first]]}


@dataclass(frozen=True)
class Written:
    """What ``encode`` wrote: videos, their moments, and videos that failed; when the first batch
    was written (``time.perf_counter()``, videos written by then), and the last."""

    videos: int = 0
    moments: int = 0
    errors: int = 0
    first_batch: tuple[float, int] | None = None
    last_batch: float | None = None


def encode(job: IndexJob, config: EncoderConfig, shape: ModelShape, store: Store, todo: list[Source],
           progress) -> Written:
    """Decode and encode ``todo`` with Ray Data (on the cluster of `ray job submit`, else on a local
    Ray started here and shut down after) and write their rows, whole videos at a time."""
    import ray

    from ..media.decoding import SamplingConfig
    from .batching import WholeVideos, sources_batch
    from .decode_stage import DecodeVideos
    from .encode_stage import EncodeClips, EncodeSettings
    from .progress import LoggedProgress, quiet_ray

    quiet_ray()  # imports Ray Data (half a second): only when there is something to encode
    own_ray = not ray.is_initialized()
    if own_ray:
        # Joins the cluster of `ray job submit` (RAY_ADDRESS), else starts a local one, without the
        # dashboard (about 180 MiB; `ray start --head` first for a local Ray with one).
        ray.init(include_dashboard=False)
    sizes = pools(job, ray.cluster_resources())
    sampling = SamplingConfig(frames=config.frames, size=shape.image_size)
    settings = EncodeSettings(encoder=config, threads=sizes.threads, reduced_precision=not job.fp32)
    # Decoding runs in an isolated process inside each decoder actor, so a crashing file never
    # kills an actor; a lost actor (node failure, kill -9) is restarted and its batch retried,
    # by Ray Data's defaults for actor pools (its per-call remote args are deprecated).
    # Memory stays near a block per call whatever the videos' length: a decoder call ships its
    # videos in parts of a block of frames, and the encoder takes the blocks as they come
    # (batch_size=None), so a call of long videos never gathers them all.
    block_bytes = ray.data.DataContext.get_current().target_max_block_size
    dataset = (
        ray.data.from_items([dict(zip(("uri", "key", "metadata"), row)) for row in zip(*sources_batch(todo).values())])
        .map_batches(DecodeVideos, fn_constructor_kwargs={"sampling": sampling, "moments": job.moments, "block_bytes": block_bytes},
                     batch_size=job.batch_size, compute=sizes.strategy("decoders"), num_cpus=sizes.decoder_cpus,
                     batch_format="numpy")
        .map_batches(EncodeClips, fn_constructor_kwargs={"settings": settings}, batch_size=None,
                     compute=sizes.strategy("encoders"), num_gpus=sizes.encoder_gpus, num_cpus=sizes.encoder_cpus,
                     batch_format="numpy")
    )
    videos = moments = errors = 0
    first_batch = last_batch = None
    gathered = WholeVideos()
    with (progress or LoggedProgress)(len(todo)) as shown:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            whole = gathered.add(batch)
            if not len(whole["id"]):
                continue
            counts = write(store, whole)
            videos, moments, errors = videos + counts[0], moments + counts[1], errors + counts[2]
            last_batch = time.perf_counter()
            first_batch = first_batch or (last_batch, videos + errors)
            shown.update(*counts)
        lost = gathered.left()
        if lost is not None:  # rows Ray Data never delivered (not seen): their videos are errors, not gaps
            keys = dict(zip(lost["video_id"], lost["uri"]))
            store.record_errors({"uri": uri, "key": key, "stage": "encode", "reason": "some of its rows never came back "
                                 "from the encoder"} for key, uri in keys.items())
            errors += len(keys)
            shown.update(0, 0, len(keys))
    if own_ray:
        ray.shutdown()  # a local Ray's processes (about 1 GB) go before a search loads a model here
    return Written(videos, moments, errors, first_batch, last_batch)


def run(job: IndexJob, progress=None) -> dict:
    """Index the job's inputs (none: the sample set) and return the run's summary; ``progress(total)``
    shows the work (see progress.py). Neither torch nor Ray is loaded unless there is something
    to encode, or a model without a local JSON config whose shape only building it tells."""
    from ..model.registry import ModelShape, check_encoder
    from .listing import list_inputs
    from .store import Store

    started = time.perf_counter()
    config = job.encoder_config().resolved()
    shape = check_encoder(config)  # a bad model, weights file or schedule fails here, before anything is created
    if shape is None:
        from ..model.encoder import VideoEncoder

        encoder = VideoEncoder.create(config)
        shape = ModelShape(encoder.embed_dim, encoder.image_size[0])
    store = Store.open(job.db, dim=shape.embed_dim, table=job.table)
    listing = list_inputs(list(job.inputs or sample_inputs(job).inputs))
    sources = listing.sources
    work = plan(store, listing, job.retry_errors)
    todo = work.todo
    log.info("%d videos found, %d already indexed, %d failed before (--retry-errors tries them again), %d to index; "
             "%d inputs are not videos or cannot be read", len(sources), work.indexed, work.failed_before, len(todo),
             len(listing.errors))
    written = encode(job, config, shape, store, todo, progress) if todo else Written()
    videos, moments, errors = written.videos, written.moments, written.errors
    pruned = store.prune(listing.covers, listing.uris()) if job.prune else None
    index = store.ensure_index()
    seconds = time.perf_counter() - started
    failed = failures(store, listing.uris())
    summary = {"db": job.db, "table": job.table, "found": len(sources), "already_indexed": work.indexed,
               "failed_before": work.failed_before, "videos": videos, "moments": moments, "errors": failed["count"],
               **({"pruned": pruned} if pruned is not None else {}),
               "rows_in_table": store.count(), "ann_index": index, "seconds": round(seconds, 1),
               "videos_per_s": round((videos + errors) / seconds, 2), "failures": failed}
    if written.first_batch:
        # Start-up (Ray, actors, model loads, the first batch) apart from the rate after it.
        first, first_videos = written.first_batch
        steady = (videos + errors - first_videos) / max(written.last_batch - first, 1e-9)
        summary |= {"startup_s": round(first - started, 2), "steady_s": round(written.last_batch - first, 2),
                    "steady_videos_per_s": round(steady, 2)}
    return summary


def list_errors(db: str, table: str = "videos") -> list[dict]:
    """The whole errors table, by uri: what is not indexed and why."""
    from .store import Store

    return Store.open(db, table=table).errors().sort_by("uri").to_pylist()
