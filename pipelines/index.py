"""Index videos into LanceDB for text search: Ray Data streams decoded videos to encoder actors,
and every video and every moment of a long video becomes a row.

    python pipelines/index.py                                  # a generated sample set, then a search
    python pipelines/index.py /videos "/more/**/*.mp4" manifest.csv s3://bucket/prefix --db videos.lancedb
    ray job submit --working-dir . -- python pipelines/index.py s3://bucket/videos --db s3://bucket/index

The table mirrors the inputs: every listed input ends either in rows or in the errors table
(<table>_errors, with the stage and the reason). Re-running skips what is indexed (keys: uri or
manifest id + size + modification time), so a run that was killed is finished by running it again;
a changed file replaces its rows; inputs that failed and have not changed are not tried again
(--retry-errors does); --prune removes files that are gone from the listed folders, globs and
prefixes. --list-errors prints the errors table.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if __package__ in (None, ""):  # run as a script: sys.path[0] is pipelines/, the repository root holds centerclip/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from centerclip import cli  # noqa: E402  (light: torch, Ray and LanceDB load after the arguments are parsed)

if TYPE_CHECKING:
    from centerclip import EncoderConfig
    from centerclip.index.batching import MomentConfig
    from centerclip.index.listing import Listing, Source
    from centerclip.model.registry import ModelShape
    from centerclip.search.searcher import Searcher
    from centerclip.index.store import Store

# torch, open_clip and the model are loaded by the encoder actors, and here only to search at the
# end: a driver that schedules (or finds nothing to do) stays small and starts fast.

log = logging.getLogger("centerclip.index")
# The sample set's clips last 4-8 s: moments of 3 s for those of 6 s or more show what moments
# are (real collections get the defaults: 10 s windows of videos of 20 s or more).
SAMPLE_MOMENTS = {"length": 3.0, "stride": 3.0, "min_duration": 6.0}


def default_moments() -> MomentConfig:
    from centerclip.index.batching import MomentConfig

    return MomentConfig()


@dataclass(frozen=True)
class IndexJob:
    inputs: tuple[str, ...] = ()  # empty: a synthetic sample set generated under `cache`
    db: str = "centerclip.lancedb"
    table: str = "videos"
    model: str | None = None
    pretrained: str | None = None
    schedule: str | None = None  # default: the model's own
    frames: int | None = None
    # Videos per decoder call, and per encoder call up to Ray Data's block size (128 MiB of frames;
    # long videos go to the encoder in smaller calls). More amortises Ray Data's per-call cost
    # (bench_index.py: 4 -> 16 videos saved 4-10% of the CPU per video; 16 -> 32 indexed about 10% faster).
    batch_size: int = 32
    decoders: int | None = None  # None: a pool of 1 and up that grows with the cluster's CPUs
    decoder_cpus: float = 0.5  # decoding 8-16 small frames is light next to encoding them
    encoders: int | None = None  # None: 1 and up, one per GPU the cluster has or adds; on CPUs, what fits
    encoder_cpus: float | None = None  # default: 1 with GPUs; on CPUs, the node's CPUs one decoder leaves (at most 8)
    gpus_per_encoder: float = 0.0  # e.g. 1 on a GPU cluster
    moments: MomentConfig = field(default_factory=default_moments)
    sample_videos: int = 40
    cache: str = ".cache/centerclip"
    query: str | None = None  # a search to show when indexing is done
    prune: bool = False  # remove rows and errors of files no longer under the listed inputs
    retry_errors: bool = False  # try again the inputs that failed and have not changed
    fp32: bool = False  # encode in float32 (default: EncodeSettings.reduced_precision)


@dataclass(frozen=True)
class Sample:
    """The generated sample set, a caption of one of its videos to search for, and every caption
    with its video's file name (to measure the search on all of them)."""

    inputs: tuple[str, ...]
    query: str
    expected: str
    captions: tuple[tuple[str, str], ...]


def encoder_config(job: IndexJob) -> EncoderConfig:
    from centerclip import EncoderConfig, Schedule

    return EncoderConfig(model=job.model, pretrained=job.pretrained, frames=job.frames,
                         schedule=Schedule.parse(job.schedule) if job.schedule else None)


@dataclass(frozen=True)
class Pools:
    """Actor pools of the two stages: (min, max) actors, max None = as many as the cluster has
    or its autoscaler adds; CPUs (and GPUs) per actor; the encoder's CPU threads."""

    decoders: tuple[int, int | None]
    decoder_cpus: float
    encoders: tuple[int, int | None]
    encoder_cpus: float
    encoder_gpus: float
    threads: int

    def strategy(self, stage: str):
        import ray

        low, high = getattr(self, stage)
        return ray.data.ActorPoolStrategy(size=low) if low == high else ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def pools(job: IndexJob, resources: dict[str, float]) -> Pools:
    """Size the stages to the cluster (``ray.cluster_resources()``); the job's flags override.
    Ray Data grows an autoscaling pool while its stage is the bottleneck and resources are free;
    pending actors of a pool with room to grow make the Ray autoscaler add nodes (GPU workers
    of cluster.yaml), so GPUs get encoders and their CPUs get decoders without tuning."""
    decoders = (job.decoders, job.decoders) if job.decoders else (1, None)
    if job.gpus_per_encoder:
        encoder_cpus = job.encoder_cpus or 1.0
        encoders = (job.encoders, job.encoders) if job.encoders else (1, None)
    else:  # on CPUs: the encoders share what the first decoders leave on a node, up to 8 CPUs each
        left = resources.get("CPU", 1.0) - (job.decoders or 1) * job.decoder_cpus
        if job.encoders:
            encoders, encoder_cpus = (job.encoders, job.encoders), job.encoder_cpus or max(0.25, left / job.encoders)
        else:
            encoder_cpus = job.encoder_cpus or max(1.0, min(8.0, left))
            encoders = (1, max(1, int(left // encoder_cpus)))
    # Ray caps an actor's threads at its whole CPUs (OMP_NUM_THREADS); the encoder sets its own.
    return Pools(decoders, job.decoder_cpus, encoders, encoder_cpus, job.gpus_per_encoder, max(1, round(encoder_cpus)))


def sample_inputs(job: IndexJob) -> Sample:
    """The generated sample set (held out from the built-in model's training data: another seed)."""
    from centerclip.datasets.synthetic import ensure_synthetic

    root = ensure_synthetic(Path(job.cache) / "sample", job.sample_videos, seed=1)
    annotations = json.loads((root / "MSRVTT_data.json").read_text())
    # A caption whose video has no temporal twin: a twin differing only in motion direction or
    # event order is the benchmark's hard case, not the demo's.
    plain = {video["video_id"] for video in annotations["videos"] if not video.get("temporal")}
    sentence = next(s for s in annotations["sentences"] if s["video_id"] in plain)
    captions = tuple((s["caption"], f"{s['video_id']}.mp4") for s in annotations["sentences"])
    return Sample((str(root / "videos"),), sentence["caption"], f"{sentence['video_id']}.mp4", captions)


def caption_ranks(searcher: Searcher, captions: tuple[tuple[str, str], ...], videos: int) -> list[int]:
    """Where each caption's own video ranks (1 = first) when the caption is searched for, among
    ``videos`` results (videos + 1 when it is not among them)."""
    import torch

    with torch.inference_mode():
        vectors = searcher.encoder.encode_text([caption for caption, _ in captions]).float().cpu().numpy()
    ranks = []
    for vector, (_, expected) in zip(vectors, captions):
        names = [Path(result.uri).name for result in searcher.vector(vector, videos)]
        ranks.append(names.index(expected) + 1 if expected in names else videos + 1)
    return ranks


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
    from centerclip.index.progress import reason_group

    errors = [row for row in store.errors().sort_by("uri").to_pylist() if row["uri"] in uris]
    by_reason: dict[str, int] = {}
    for row in errors:
        by_reason[reason_group(row["reason"])] = by_reason.get(reason_group(row["reason"]), 0) + 1
    return {"count": len(errors), "by_reason": dict(sorted(by_reason.items(), key=lambda item: -item[1])),
            "first": [{name: row[name] for name in ("uri", "stage", "reason")} for row in errors[:first]]}


@dataclass(frozen=True)
class Written:
    """What ``encode`` wrote: videos, their moments, and videos that failed; when the first batch
    was written (seconds since the job started, videos written by then), and the last."""

    videos: int = 0
    moments: int = 0
    errors: int = 0
    first_batch: tuple[float, int] | None = None
    last_batch: float | None = None


def encode(job: IndexJob, config: EncoderConfig, shape: ModelShape, store: Store, todo: list[Source], progress,
           started: float) -> Written:
    """Decode and encode ``todo`` with Ray Data (on the cluster of `ray job submit`, else on a local
    Ray started here and shut down after) and write their rows, whole videos at a time."""
    import ray

    from centerclip.index.batching import DecodeVideos, EncodeClips, EncodeSettings, WholeVideos, sources_batch
    from centerclip.index.progress import LoggedProgress, quiet_ray
    from centerclip.media.decoding import SamplingConfig

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
            last_batch = time.perf_counter() - started
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
        ray.shutdown()  # a local Ray's processes (about 1 GB) go before the search loads a model here
    return Written(videos, moments, errors, first_batch, last_batch)


def run(job: IndexJob, progress=None) -> dict:
    """Index the job's inputs; ``progress(total)`` shows the work (see centerclip.index.progress).
    Neither torch nor Ray is loaded unless there is something to encode or search."""
    from centerclip.index.listing import list_inputs
    from centerclip.model.registry import ModelShape, check_encoder
    from centerclip.index.store import Store

    started = time.perf_counter()
    config = encoder_config(job).resolved()
    shape = check_encoder(config)  # a bad model, weights file or schedule fails here, before anything is created
    encoder = None
    if shape is None:  # a model without a local JSON config: only building it tells its shape
        encoder = _video_encoder(config)
        shape = ModelShape(encoder.embed_dim, encoder.image_size[0])
    sample = None if job.inputs else sample_inputs(job)
    inputs, query, expected = (job.inputs, job.query, None) if sample is None else (sample.inputs, sample.query, sample.expected)
    store = Store.open(job.db, dim=shape.embed_dim, table=job.table)
    listing = list_inputs(list(inputs))
    sources = listing.sources
    work = plan(store, listing, job.retry_errors)
    todo = work.todo
    log.info("%d videos found, %d already indexed, %d failed before (--retry-errors tries them again), %d to index; "
             "%d inputs are not videos or cannot be read", len(sources), work.indexed, work.failed_before, len(todo),
             len(listing.errors))
    written = encode(job, config, shape, store, todo, progress, started) if todo else Written()
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
        first_s, first_videos = written.first_batch
        steady = (videos + errors - first_videos) / max(written.last_batch - first_s, 1e-9)
        summary |= {"startup_s": round(first_s, 2), "steady_s": round(written.last_batch - first_s, 2),
                    "steady_videos_per_s": round(steady, 2)}
    if query:
        from centerclip.search.searcher import Searcher

        searcher = Searcher(store, encoder or _video_encoder(config))
        results = searcher.text(query, k=3)
        summary["search"] = {"query": query, "expected": expected, "results": [result.to_dict() for result in results]}
    if sample is not None:
        ranks = caption_ranks(searcher, sample.captions, len(sources))
        summary["search"]["rank"] = ranks[[caption for caption, _ in sample.captions].index(query)]
        summary["sample"] = {"captions": len(ranks), "videos": len(sources),
                             "R@1": round(100 * sum(rank == 1 for rank in ranks) / len(ranks), 1),
                             "R@5": round(100 * sum(rank <= 5 for rank in ranks) / len(ranks), 1),
                             "median_rank": float(np.median(ranks))}
    return summary


def _video_encoder(config: EncoderConfig):
    from centerclip.model.encoder import VideoEncoder

    return VideoEncoder.create(config)


def list_errors(db: str, table: str = "videos") -> list[dict]:
    """The whole errors table, by uri: what is not indexed and why."""
    from centerclip.index.store import Store

    return Store.open(db, table=table).errors().sort_by("uri").to_pylist()


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="*", help="folders, globs, manifests (.csv/.parquet/.jsonl with a uri column), "
                                                  "files or object-store prefixes; none: a generated sample set")
    parser.add_argument("--db", default="centerclip.lancedb", help="LanceDB database: a folder or s3://... (default: %(default)s)")
    parser.add_argument("--table", default="videos", help="table name (default: %(default)s)")
    parser.add_argument("--model", help="open_clip model name (default: the built-in model)")
    parser.add_argument("--pretrained", help="open_clip tag, weights file, or centerclip checkpoint")
    parser.add_argument("--schedule", type=cli.schedule, help="token-clustering schedule, e.g. kmedoids@3:4x49 (default: the model's)")
    parser.add_argument("--frames", type=cli.positive(int), help="frames per clip (default: the model's)")
    parser.add_argument("--batch-size", type=cli.positive(int), default=IndexJob.batch_size,
                        help="videos per decoder and encoder call; long videos go to the encoder in calls of about 128 MiB "
                             "of frames (default: %(default)s; fewer: smaller writes, more of Ray's per-call cost)")
    parser.add_argument("--decoders", type=cli.positive(int), help="decoding actors (default: from 1 up to what the cluster's CPUs allow)")
    parser.add_argument("--decoder-cpus", type=cli.positive(float), default=0.5, help="CPUs per decoding actor (default: %(default)s)")
    parser.add_argument("--encoders", type=cli.positive(int), help="encoder actors (default: from 1 up to one per GPU the cluster "
                                                                   "has or adds; on CPUs, as many as fit beside a decoder)")
    parser.add_argument("--encoder-cpus", type=cli.positive(float), help="CPUs per encoder actor (default: 1 with GPUs, else "
                                                                         "what a decoder leaves on the node, at most 8)")
    parser.add_argument("--gpus-per-encoder", type=float, default=0.0, help="GPUs per encoder actor, e.g. 1 (default: CPU)")
    parser.add_argument("--fp32", action="store_true", help="encode in float32 (default: fp16 on GPUs, bfloat16 on CPUs "
                                                           "that compute it natively: half the CPU per video)")
    parser.add_argument("--moment-length", type=cli.positive(float), help="moment window in seconds (default: 10; sample set: 3)")
    parser.add_argument("--moment-stride", type=cli.positive(float), help="moment stride in seconds (default: 10; sample set: 3)")
    parser.add_argument("--moments-after", type=float, help="videos at least this long get moments (default: 20; sample set: 6)")
    parser.add_argument("--sample-videos", type=cli.positive(int), default=40, help="size of the generated sample set (no inputs)")
    parser.add_argument("--cache", default=".cache/centerclip", help="folder for the generated sample set")
    parser.add_argument("--query", help="a text search to run when indexing is done")
    parser.add_argument("--prune", action="store_true",
                        help="remove rows and errors of files no longer under the listed folders, globs and prefixes")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try again the inputs that failed before and have not changed (skipped by default)")
    parser.add_argument("--list-errors", action="store_true",
                        help="print the errors table of --db/--table (one JSON object per line) and exit")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[IndexJob, bool]:
    """The job, and whether to print the summary as JSON."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args.pop("debug")
    args.pop("list_errors")
    as_json = args.pop("json")
    # Nothing given exists: a typo, not a library. (Some missing among others: those end in the
    # errors table, and lose their rows, like any input that is gone.)
    missing = cli.missing_inputs(args["inputs"])
    if missing and len(missing) == len(args["inputs"]):
        parser.error(f"input {missing[0]} does not exist: pass folders, globs, manifests, video files or object-store prefixes")
    from centerclip.index.batching import MomentConfig

    given = {name: args.pop(flag) for name, flag in
             (("length", "moment_length"), ("stride", "moment_stride"), ("min_duration", "moments_after"))}
    defaults = {} if args["inputs"] else SAMPLE_MOMENTS
    moments = MomentConfig(**{**defaults, **{name: value for name, value in given.items() if value is not None}})
    return IndexJob(inputs=tuple(args.pop("inputs")), moments=moments, **args), as_json


def main(argv: list[str] | None = None) -> dict:
    from centerclip.index.progress import IndexProgress, format_summary

    parsed = build_parser().parse_args(argv)
    if parsed.list_errors:
        errors = list_errors(parsed.db, parsed.table)
        for error in errors:
            print(json.dumps({**error, "time": error["time"].isoformat()}))
        return {"errors": errors}
    job, as_json = parse_args(argv)
    summary = run(job, progress=IndexProgress)
    print(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    return summary


if __name__ == "__main__":
    cli.run(main)
