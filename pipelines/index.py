"""Index videos into LanceDB for text search: Ray Data streams decoded videos to encoder actors,
and every video and every moment of a long video becomes a row.

    python pipelines/index.py                                  # a generated sample set, then a search
    python pipelines/index.py /videos "/more/**/*.mp4" manifest.csv s3://bucket/prefix --db videos.lancedb
    ray job submit --working-dir . -- python pipelines/index.py s3://bucket/videos --db s3://bucket/index

Re-running skips what is indexed (keys: uri or manifest id + size + modification time), so a run
that was killed is finished by running it again. Files that cannot be decoded go to the errors
table (<table>_errors) with the reason; the rest is indexed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from centerclip.datasets.synthetic import ensure_synthetic
from centerclip.indexing import DecodeVideos, EncodeClips, EncodeSettings, MomentConfig, list_inputs, sources_batch
from centerclip.models import EncoderConfig, ModelShape, model_shape
from centerclip.schedule import Schedule
from centerclip.store import Store
from centerclip.video import SamplingConfig

# torch, open_clip and the model are loaded by the encoder actors, and here only to search at the
# end: a driver that schedules (or finds nothing to do) stays small and starts fast.

log = logging.getLogger("centerclip.index")


@dataclass(frozen=True)
class IndexJob:
    inputs: tuple[str, ...] = ()  # empty: a synthetic sample set generated under `cache`
    db: str = "centerclip.lancedb"
    table: str = "videos"
    model: str | None = None
    pretrained: str | None = None
    schedule: str | None = None  # default: the model's own
    frames: int | None = None
    batch_size: int = 16  # videos per encoder call
    decode_batch_size: int = 4  # videos per decoder call: amortises Ray's per-task cost
    decoders: int | None = None  # None: a pool of 1 and up that grows with the cluster's CPUs
    decoder_cpus: float = 0.5  # decoding 8-16 small frames is light next to encoding them
    encoders: int | None = None  # None: 1 and up, one per GPU the cluster has or adds; on CPUs, what fits
    encoder_cpus: float | None = None  # default: 1 with GPUs; on CPUs, the node's CPUs one decoder leaves (at most 8)
    gpus_per_encoder: float = 0.0  # e.g. 1 on a GPU cluster
    moments: MomentConfig = field(default_factory=MomentConfig)
    sample_videos: int = 40
    cache: str = ".cache/centerclip"
    query: str | None = None  # a search to show when indexing is done


def encoder_config(job: IndexJob) -> EncoderConfig:
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

    def strategy(self, stage: str) -> ray.data.ActorPoolStrategy:
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


def sample_inputs(job: IndexJob) -> tuple[tuple[str, ...], str, str]:
    """The generated sample set (held out from the built-in model's training data: another seed),
    a caption of one of its videos to search for, and that video's file name."""
    root = ensure_synthetic(Path(job.cache) / "sample", job.sample_videos, seed=1)
    annotations = json.loads((root / "MSRVTT_data.json").read_text())
    # A caption whose video has no temporal twin: a twin differing only in motion direction or
    # event order is the benchmark's hard case, not the demo's.
    plain = {video["video_id"] for video in annotations["videos"] if not video.get("temporal")}
    sentence = next(s for s in annotations["sentences"] if s["video_id"] in plain)
    return (str(root / "videos"),), sentence["caption"], f"{sentence['video_id']}.mp4"


def write(store: Store, batch: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """Upsert a batch of encoded rows and record its failures; returns (videos, moments, errors)."""
    failed = batch["error"].astype(bool)
    if failed.any():
        store.record_errors({"uri": uri, "key": key, "stage": stage, "reason": reason} for uri, key, stage, reason
                            in zip(batch["uri"][failed], batch["id"][failed], batch["stage"][failed], batch["error"][failed]))
    good = ~failed
    if good.any():
        rows = {name: batch[name][good] for name in ("id", "video_id", "kind", "uri", "vector", "model", "schedule", "metadata")}
        for name in ("start", "end"):
            rows[name] = [None if math.isnan(value) else float(value) for value in batch[name][good]]
        store.upsert(rows)
    kinds = batch["kind"][good]
    return int((kinds == "video").sum()), int((kinds == "moment").sum()), int(failed.sum())


def run(job: IndexJob) -> dict:
    started = time.perf_counter()
    inputs, query, expected = (job.inputs, job.query, None) if job.inputs else sample_inputs(job)
    config = encoder_config(job).resolved()
    shape = model_shape(config.model)
    encoder = None
    if shape is None:  # a model without a local JSON config: only building it tells its shape
        encoder = _video_encoder(config)
        shape = ModelShape(encoder.embed_dim, encoder.image_size[0])
    store = Store.open(job.db, dim=shape.embed_dim, table=job.table)
    sources, listing_errors = list_inputs(list(inputs))
    store.record_errors(listing_errors)
    indexed = store.indexed_keys([source.key for source in sources])
    todo = [source for source in sources if source.key not in indexed]
    log.info("%d videos found, %d already indexed, %d to index; %d inputs could not be listed",
             len(sources), len(indexed), len(todo), len(listing_errors))
    videos = moments = errors = 0
    first_batch = last_batch = None  # (seconds since start, videos) when the first batch was written; seconds of the last
    if todo:
        own_ray = not ray.is_initialized()
        if own_ray:
            ray.init()  # joins the cluster of `ray job submit` (RAY_ADDRESS), else starts a local one
        sizes = pools(job, ray.cluster_resources())
        sampling = SamplingConfig(frames=config.frames, size=shape.image_size)
        settings = EncodeSettings(encoder=config, threads=sizes.threads)
        # Decoding runs in an isolated process inside each decoder actor, so a crashing file never
        # kills an actor; a lost actor (node failure, kill -9) is restarted and its batch retried a
        # bounded number of times instead of Ray's default of forever.
        retries = {"max_restarts": 3, "max_task_retries": 3}  # Ray Data takes these as remote args only
        dataset = (
            ray.data.from_items([dict(zip(("uri", "key", "metadata"), row))
                                 for row in zip(*sources_batch(todo).values())])
            .map_batches(DecodeVideos, fn_constructor_kwargs={"sampling": sampling, "moments": job.moments},
                         batch_size=job.decode_batch_size, compute=sizes.strategy("decoders"),
                         num_cpus=sizes.decoder_cpus, batch_format="numpy", **retries)
            .map_batches(EncodeClips, fn_constructor_kwargs={"settings": settings}, batch_size=job.batch_size,
                         compute=sizes.strategy("encoders"), num_gpus=sizes.encoder_gpus,
                         num_cpus=sizes.encoder_cpus, batch_format="numpy", **retries)
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            counts = write(store, batch)
            videos, moments, errors = videos + counts[0], moments + counts[1], errors + counts[2]
            last_batch = time.perf_counter() - started
            first_batch = first_batch or (last_batch, videos + errors)
            log.info("indexed %d/%d videos (%d moments), %d errors, %.1f videos/s", videos, len(todo), moments,
                     errors, (videos + errors) / (time.perf_counter() - started))
        if own_ray:
            ray.shutdown()  # a local Ray's processes (about 1 GB) go before the search loads a model here
    index = store.ensure_index()
    seconds = time.perf_counter() - started
    summary = {"db": job.db, "table": job.table, "found": len(sources), "already_indexed": len(indexed),
               "videos": videos, "moments": moments, "errors": errors + len(listing_errors),
               "rows_in_table": store.count(), "ann_index": index, "seconds": round(seconds, 1),
               "videos_per_s": round((videos + errors) / seconds, 2)}
    if first_batch:
        # Start-up (Ray, actors, model loads, the first batch) apart from the rate after it.
        steady = (videos + errors - first_batch[1]) / max(last_batch - first_batch[0], 1e-9)
        summary |= {"startup_s": round(first_batch[0], 2), "steady_s": round(last_batch - first_batch[0], 2),
                    "steady_videos_per_s": round(steady, 2)}
    if query:
        from centerclip.search import Searcher

        results = Searcher(store, encoder or _video_encoder(config)).text(query, k=3)
        summary["search"] = {"query": query, "expected": expected, "results": [result.to_dict() for result in results]}
    return summary


def _video_encoder(config: EncoderConfig):
    from centerclip.encoder import VideoEncoder

    return VideoEncoder.create(config)


def parse_args(argv: list[str] | None = None) -> IndexJob:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="folders, globs, manifests (.csv/.parquet/.jsonl with a uri column), "
                                                  "files or object-store prefixes; none: a generated sample set")
    parser.add_argument("--db", default="centerclip.lancedb", help="LanceDB database: a folder or s3://... (default: %(default)s)")
    parser.add_argument("--table", default="videos", help="table name (default: %(default)s)")
    parser.add_argument("--model", help="open_clip model name (default: the built-in model)")
    parser.add_argument("--pretrained", help="open_clip tag, weights file, or centerclip checkpoint")
    parser.add_argument("--schedule", help="token-clustering schedule, e.g. kmedoids@3:4x49 (default: the model's)")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per encoder call (default: %(default)s)")
    parser.add_argument("--decoders", type=int, help="decoding actors (default: from 1 up to what the cluster's CPUs allow)")
    parser.add_argument("--decoder-cpus", type=float, default=0.5, help="CPUs per decoding actor (default: %(default)s)")
    parser.add_argument("--encoders", type=int, help="encoder actors (default: from 1 up to one per GPU the cluster has or "
                                                     "adds; on CPUs, as many as fit beside a decoder)")
    parser.add_argument("--encoder-cpus", type=float, help="CPUs per encoder actor (default: 1 with GPUs, else what a decoder "
                                                           "leaves on the node, at most 8)")
    parser.add_argument("--gpus-per-encoder", type=float, default=0.0, help="GPUs per encoder actor, e.g. 1 (default: CPU)")
    parser.add_argument("--moment-length", type=float, default=10.0, help="moment window in seconds (default: %(default)s)")
    parser.add_argument("--moment-stride", type=float, default=10.0, help="moment stride in seconds (default: %(default)s)")
    parser.add_argument("--moments-after", type=float, default=20.0, help="videos at least this long get moments (default: %(default)s)")
    parser.add_argument("--sample-videos", type=int, default=40, help="size of the generated sample set (no inputs)")
    parser.add_argument("--cache", default=".cache/centerclip", help="folder for the generated sample set")
    parser.add_argument("--query", help="a text search to run when indexing is done")
    args = vars(parser.parse_args(argv))
    moments = MomentConfig(args.pop("moment_length"), args.pop("moment_stride"), args.pop("moments_after"))
    return IndexJob(inputs=tuple(args.pop("inputs")), moments=moments, **args)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("centerclip").setLevel(logging.INFO)  # our progress, without every library's INFO lines
    summary = run(parse_args(argv))
    print(json.dumps({key: value for key, value in summary.items() if key != "search"}, indent=2))
    if "search" in summary:
        expected = summary["search"]["expected"]
        print(f"\nsearch: {summary['search']['query']!r}" + (f" (it describes {expected})" if expected else ""))
        for rank, result in enumerate(summary["search"]["results"], 1):
            span = "whole video" if result["start"] is None else f"{result['start']:.1f}-{result['end']:.1f} s"
            print(f"  {rank}. {result['score']:.3f}  {result['uri']}  ({span})")
    return summary


if __name__ == "__main__":
    main()
