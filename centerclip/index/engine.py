"""The indexing engine: list the job's inputs, plan them against the store, then decode, encode and
write what is left with Ray Data, whole videos at a time.

    InputStream (listing.py) -> waves of plan (planning.py, store.py) -> DecodeVideos (CPU actors, decode_stage.py)
    -> EncodeClips (actor pool, GPU when present, encode_stage.py) -> WholeVideos -> write

torch, open_clip and the model are loaded by the encoder actors, not here: a driver that schedules
(or finds nothing to do) stays small and starts fast.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import cli
from ..cli import JobStopped
from . import watchdog
from .job import IndexJob
from .planning import PLAN_INDEX_CACHE, Planned, waves
from .pools import Pools, cluster_shape, pools
from .sample import sample_inputs

if TYPE_CHECKING:
    import ray

    from ..model.registry import EncoderConfig, ModelShape
    from .listing import Source
    from .store import Store

log = logging.getLogger("centerclip.index")


def _lost_work() -> tuple[type[BaseException], ...]:
    """What a pass ends with when the cluster loses work: an actor gone with its node, a block
    lost with the node holding it. A failure of our own code is none of these, and is raised."""
    from ray import exceptions

    return (exceptions.RayActorError, exceptions.ObjectLostError, exceptions.NodeDiedError, exceptions.WorkerCrashedError)


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


def failures(store: Store, listed: Callable[[str], bool], first: int = 20) -> dict:
    """The failed inputs that ``listed`` (this run's listing) names: how many, how many per reason,
    and the first few by uri; the errors table is read in batches."""
    from .progress import reason_group

    count = 0
    by_reason: dict[str, int] = {}
    firsts: list[tuple[str, str, str]] = []
    for batch in store.error_batches(["uri", "stage", "reason"]):
        for uri, stage, reason in zip(*(batch.column(name).to_pylist() for name in ("uri", "stage", "reason"))):
            if listed(uri):
                count += 1
                by_reason[reason_group(reason)] = by_reason.get(reason_group(reason), 0) + 1
                firsts.append((uri, stage, reason))
                if len(firsts) >= 4 * first:  # keep the smallest few, not every error
                    firsts = heapq.nsmallest(first, firsts)
    firsts = heapq.nsmallest(first, firsts)
    return {"count": count, "by_reason": dict(sorted(by_reason.items(), key=lambda item: -item[1])),
            "first": [{"uri": uri, "stage": stage, "reason": reason} for uri, stage, reason in firsts]}


# A pass over the videos left ends early when the cluster loses work (a node, its actors or the
# blocks they held); the next pass, on the actors that the cluster can then host, takes the
# videos the last one did not finish. Written videos are never redone.
PASSES = 4
ACTORS_START_S = 7 * 24 * 3600  # Ray Data's wait for a pool's first actors; the stall watchdog ends it sooner


@dataclass
class Written:
    """What ``encode`` wrote, as it goes: videos, their moments, and videos that failed; when the
    first batch was written (``time.perf_counter()``, videos written by then), and the last; the
    passes it took, the videos indexed again after a pass lost them, and the nodes that decoded
    and encoded."""

    videos: int = 0
    moments: int = 0
    errors: int = 0
    first_batch: tuple[float, int] | None = None
    last_batch: float | None = None
    passes: int = 0
    retried: int = 0
    lost: list[str] = field(default_factory=list)  # why each pass after the first was needed
    decoded_on: set[str] = field(default_factory=set)
    encoded_on: set[str] = field(default_factory=set)
    started: float | None = None  # when indexing began (``time.perf_counter()``), as the progress line counts


def stream(job: IndexJob, config: EncoderConfig, shape: ModelShape, sources: list[Source]) -> tuple[Pools, ray.data.Dataset]:
    """The Ray Data pipeline over ``sources``: decoder actors, then encoder actors, each pool sized
    to the cluster as it is now, and those sizes. Its batches are the encoder's rows."""
    import ray

    from ..media import stores
    from ..media.decoding import SamplingConfig
    from .batching import sources_batch
    from .decode_stage import DecodeVideos
    from .encode_stage import EncodeClips, EncodeSettings

    cluster = cluster_shape()
    sizes = pools(job, cluster)
    # On several nodes, a job of few videos is cut into at least two calls per node, each its own
    # block, so that every node's actors get work (one block of 40 videos is one decoder's call).
    nodes = len(cluster.nodes)
    batch = job.batch_size if nodes < 2 else max(1, min(job.batch_size, math.ceil(len(sources) / (2 * nodes))))
    sampling = SamplingConfig.parse_options(job.decode, frames=config.frames, size=shape.image_size)
    settings = EncodeSettings(encoder=config, threads=sizes.threads, reduced_precision=not job.fp32)
    # Decoding runs in an isolated process inside each decoder actor, so a crashing file never
    # kills an actor. An actor that dies with its node is not restarted (max_restarts=0): a
    # restart waits for CPUs the survivors hold, and the calls bound to it would wait with it. The
    # pass fails instead, and the next one runs on what the cluster has then.
    # Memory stays near a block per call whatever the videos' length: a decoder call ships its
    # videos in parts of a block of frames, and the encoder takes the blocks as they come
    # (batch_size=None), so a call of long videos never gathers them all.
    context = ray.data.DataContext.get_current()
    block_bytes = context.target_max_block_size
    # The decoders read objects with the driver's store settings (AWS_* and the like), on any node.
    store_variables = stores.environment()
    store_settings = {"runtime_env": {"env_vars": store_variables}} if store_variables else {}
    # On several nodes each pool starts whole before the first block flows: Ray Data otherwise runs
    # once one actor is up, and the first encoder to load its model can take a short job's every
    # block while its peer on the other node is still loading. The wait is no hang: the stall
    # watchdog stops a job whose actors no node can host, and a pool that cannot grow is sized to fit.
    context.wait_for_min_actors_s = ACTORS_START_S if nodes >= 2 and not cluster.grows else -1
    # Ray Data (2.60) names no parameter for an actor's restarts: max_restarts goes as a plain remote
    # argument, which it warns it will stop taking in 2.64.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return sizes, (
            ray.data.from_items([dict(zip(("uri", "key", "metadata"), row)) for row in zip(*sources_batch(sources).values())],
                                override_num_blocks=math.ceil(len(sources) / batch))
            .map_batches(DecodeVideos, fn_constructor_kwargs={"sampling": sampling, "moments": job.moments, "block_bytes": block_bytes},
                         batch_size=batch, compute=sizes.strategy("decoders"), num_cpus=sizes.decoder_cpus,
                         batch_format="numpy", max_restarts=0, **store_settings)
            .map_batches(EncodeClips, fn_constructor_kwargs={"settings": settings}, batch_size=None,
                         compute=sizes.strategy("encoders"), num_gpus=sizes.encoder_gpus, num_cpus=sizes.encoder_cpus,
                         batch_format="numpy", max_restarts=0)
        )


def encode(job: IndexJob, config: EncoderConfig, shape: ModelShape, store: Store, todo: Iterator[list[Source]],
           progress) -> Written:
    """Decode and encode the waves of ``todo`` with Ray Data (on the cluster of `ray job submit`,
    else on a local Ray started here at the first wave and shut down after) and write their rows,
    whole videos at a time, in passes until every video of a wave is written or has failed."""
    from .progress import LoggedProgress, quiet_ray

    first = next(todo, None)
    if first is None:
        return Written()
    import ray

    quiet_ray()  # imports Ray Data (half a second): only when there is something to encode
    own_ray = not ray.is_initialized()
    written = Written()
    try:
        if own_ray:
            # Joins the cluster of `ray job submit` (RAY_ADDRESS), else starts a local one, without the
            # dashboard (about 180 MiB; `ray start --head` first for a local Ray with one).
            try:
                ray.init(include_dashboard=False)
            except SystemExit as stop:  # SIGTERM while Ray starts: its own handler meanwhile exits with the signal
                if stop.code != signal.SIGTERM:
                    raise
                raise cli.Interrupted(signal.SIGTERM) from None
            except (ConnectionError, RuntimeError, TimeoutError) as error:
                where = os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise JobStopped(f"could not start or join Ray ({where}): {cli.one_line(error)[:300]}; check the "
                                 f"address, free space under {os.environ.get('RAY_TMPDIR') or '/tmp'}, and --debug "
                                 f"for Ray's traceback") from None
        cli.stop_on_sigterm()  # again: Ray's start replaced it
        written.started = time.perf_counter()
        with (progress or LoggedProgress)(len(first)) as shown:
            total = 0
            for wave in itertools.chain([first], todo):
                total += len(wave)
                if hasattr(shown, "grow"):
                    shown.grow(total)  # the listing goes on: the total is what it has found so far
                _passes(job, config, shape, store, wave, shown, written)
        return written
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: what is written stays, and a re-run goes on
        raise cli.Interrupted(getattr(stop, "signum", signal.SIGINT),
                              f"{written.videos} videos ({written.moments} moments) and {written.errors} errors are in the "
                              f"table; the same command again goes on from there") from None
    finally:
        if own_ray:
            with cli.signals_held():
                ray.shutdown()  # before the interpreter's exit does it; a local Ray's processes (about 1 GB) go


def _passes(job: IndexJob, config: EncoderConfig, shape: ModelShape, store: Store, todo: list[Source],
            shown, written: Written) -> None:
    """Index one wave, in passes until each of its videos is written or has failed."""
    from .batching import WholeVideos

    left = todo
    for attempt in range(1, PASSES + 1):
        written.passes += 1
        done: set[str] = set()
        gathered = WholeVideos()
        try:
            sizes, dataset = stream(job, config, shape, left)
            for batch in watchdog.within(dataset.iter_batches(batch_size=None, batch_format="numpy"), job.stall_minutes,
                                         partial(watchdog.why_stalled, job.stall_minutes, sizes)):
                whole = gathered.add(batch)
                if not len(whole["id"]):
                    continue
                counts = write(store, whole)
                done.update(whole["video_id"])
                written.decoded_on.update(whole["decoded_on"])
                written.encoded_on.update(whole["encoded_on"])
                written.videos, written.moments, written.errors = (written.videos + counts[0], written.moments + counts[1],
                                                             written.errors + counts[2])
                written.last_batch = time.perf_counter()
                written.first_batch = written.first_batch or (written.last_batch, written.videos + written.errors)
                shown.update(*counts)
        except _lost_work() as failure:
            left = [source for source in left if source.key not in done]
            reason = f"pass {attempt} lost the work of {len(left)} videos ({type(failure).__name__})"
            if attempt == PASSES:
                raise JobStopped(f"{reason}, and {PASSES} passes could not index them: is the cluster losing "
                                 f"nodes faster than it indexes? A re-run goes on from here") from None
            log.warning("%s: indexing them again", reason)
            written.lost.append(reason)
            written.retried += len(left)
            continue
        missing = gathered.left()
        if missing is not None:  # rows Ray Data never delivered (not seen): their videos are errors, not gaps
            keys = dict(zip(missing["video_id"], missing["uri"]))
            store.record_errors({"uri": uri, "key": key, "stage": "encode", "reason": "some of its rows never came "
                                 "back from the encoder"} for key, uri in keys.items())
            written.errors += len(keys)
            shown.update(0, 0, len(keys))
        return


def run(job: IndexJob, progress=None) -> dict:
    """Index the job's inputs (none: the sample set) and return the run's summary; ``progress(total)``
    shows the work (see progress.py). Neither torch nor Ray is loaded unless there is something
    to encode, or a model without a local JSON config whose shape only building it tells. A full
    disk stops the job (JobStopped) with one line naming the db, its free space and the space a
    run needs; what was written stays."""
    try:
        return _run(job, progress)
    except Exception as error:  # noqa: BLE001 - LanceDB reports a full disk as an OSError or its own error
        if not _no_space(error):
            raise
        raise JobStopped(_no_space_line(job.db)) from None


def _no_space(error: BaseException) -> bool:
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)


def _no_space_line(db: str) -> str:
    """Where the db is, how much room is left there, and what its rows take so far."""
    from ..media.sources import path_from_uri

    local = path_from_uri(db)
    if local is None:
        return f"the store behind {db} is full: free space there and run the same command again; what is written is kept"
    folder = os.path.abspath(local)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    used = sum(entry.stat().st_size for entry in Path(folder).rglob("*") if entry.is_file()) if os.path.isdir(local) else 0
    return (f"no space left on the disk that holds {db} ({free / 2**20:.1f} MiB free; the table takes "
            f"{used / 2**20:.1f} MiB so far, and a run needs room for its new rows and one more version of "
            f"the table's index): free space and run the same command again; what is written is kept")


def _db_prefix(db: str) -> str:
    """The prefix of the db's own files as the listing names them (a db inside a listed folder or
    prefix is not an input)."""
    from ..media.sources import path_from_uri, uri_from_path

    local = path_from_uri(db)
    return (db if local is None else uri_from_path(os.path.abspath(local))).rstrip("/") + "/"


def _run(job: IndexJob, progress) -> dict:
    from ..model.registry import ModelShape, check_encoder
    from ..model.weight_files import names_a_file
    from .listing import InputStream
    from .store import Store

    started = time.perf_counter()
    config = job.encoder_config().resolved()
    shape = check_encoder(config)  # a bad model, weights file or schedule fails here, before anything is created
    if shape is None or (job.pretrained and names_a_file(job.pretrained)):
        # Built once here, with the loader the encoder actors use: a pickle, a truncated file or
        # another model's weights of the user's are one line now, not actor deaths once Ray has
        # started. The built-in weights ship with the project: a run with them loads no torch here.
        from ..model.encoder import VideoEncoder

        encoder = VideoEncoder.create(config)
        shape = ModelShape(encoder.embed_dim, encoder.image_size[0])
        del encoder
    store = Store.open(job.db, dim=shape.embed_dim, table=job.table, index_cache_bytes=PLAN_INDEX_CACHE)
    listing = InputStream(list(job.inputs or sample_inputs(job).inputs), exclude=_db_prefix(job.db))
    planned = Planned()
    written = encode(job, config, shape, store, waves(store, listing, job.retry_errors, planned), progress)
    videos, moments, errors = written.videos, written.moments, written.errors
    pruned = store.prune(listing.covers, listing.was_listed) if job.prune else None
    index = store.ensure_index()
    seconds = time.perf_counter() - started
    failed = failures(store, listing.was_listed)
    summary = {"db": job.db, "table": job.table, "found": planned.found, "already_indexed": planned.indexed,
               "failed_before": planned.failed_before, "videos": videos, "moments": moments, "failed_now": errors,
               "errors": failed["count"],
               **({"pruned": pruned} if pruned is not None else {}),
               **({"nodes": {"decoded_on": len(written.decoded_on), "encoded_on": len(written.encoded_on)}}
                  if planned.todo else {}),
               **({"retried": {"videos": written.retried, "passes": written.passes, "why": list(written.lost)}}
                  if written.retried else {}),
               "rows_in_table": store.count(), "ann_index": index, "seconds": round(seconds, 1),
               "videos_per_s": round((videos + errors) / seconds, 2), "failures": failed}
    if written.last_batch:  # the progress line's rate: since indexing began, to the last write
        summary["indexing_videos_per_s"] = round((videos + errors) / max(written.last_batch - written.started, 1e-9), 2)
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
