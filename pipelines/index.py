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

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.datasets.synthetic import ensure_synthetic
from centerclip.indexing import DecodeVideos, EncodeClips, EncodeSettings, MomentConfig, sources_batch
from centerclip.listing import Listing, Source, list_inputs
from centerclip.search import Searcher
from centerclip.store import Store
from centerclip.video import SamplingConfig

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
    decoders: int = 1
    decoder_cpus: float = 0.5  # decoding 8-16 small frames is light next to encoding them
    encoders: int = 1
    encoder_cpus: float | None = None  # default: 1 with GPUs; on CPUs, the cluster's CPUs the decoders leave
    gpus_per_encoder: float = 0.0  # e.g. 1 on a GPU cluster
    moments: MomentConfig = field(default_factory=MomentConfig)
    sample_videos: int = 40
    cache: str = ".cache/centerclip"
    query: str | None = None  # a search to show when indexing is done
    prune: bool = False  # remove rows and errors of files no longer under the listed inputs
    retry_errors: bool = False  # try again the inputs that failed and have not changed


def encoder_config(job: IndexJob) -> EncoderConfig:
    return EncoderConfig(model=job.model, pretrained=job.pretrained, frames=job.frames,
                         schedule=Schedule.parse(job.schedule) if job.schedule else None)


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
    errors = [row for row in store.errors().sort_by("uri").to_pylist() if row["uri"] in uris]
    by_reason: dict[str, int] = {}
    for row in errors:
        by_reason[reason_group(row["reason"])] = by_reason.get(reason_group(row["reason"]), 0) + 1
    return {"count": len(errors), "by_reason": dict(sorted(by_reason.items(), key=lambda item: -item[1])),
            "first": [{name: row[name] for name in ("uri", "stage", "reason")} for row in errors[:first]]}


def reason_group(reason: str) -> str:
    """"cannot decode: moov atom not found" -> "cannot decode": the part without file details."""
    return reason.partition(": ")[0]


def format_failures(summary: dict, db: str, table: str) -> str:
    found = summary["failures"]
    if not found["count"]:
        return ""
    lines = [f"{found['count']} inputs not indexed, by reason:"]
    for group, count in found["by_reason"].items():
        lines.append(f"  {group} ({count})")
        for row in found["first"]:
            if reason_group(row["reason"]) == group:
                detail = row["reason"][len(group) + 2:]
                lines.append(f"    {json.dumps(row['uri'])[1:-1] if not row['uri'].isprintable() else row['uri']}"
                             + (f"  ({detail})" if detail else ""))
    if found["count"] > len(found["first"]):
        lines.append(f"  ... and {found['count'] - len(found['first'])} more")
    lines.append(f"all errors: python pipelines/index.py --db {db} --table {table} --list-errors")
    return "\n".join(lines)


def run(job: IndexJob) -> dict:
    started = time.perf_counter()
    inputs, query, expected = (job.inputs, job.query, None) if job.inputs else sample_inputs(job)
    config = encoder_config(job)
    encoder = VideoEncoder.create(config)  # the driver's copy: embedding size, frame size, search
    store = Store.open(job.db, dim=encoder.embed_dim, table=job.table)
    listing = list_inputs(list(inputs))
    sources = listing.sources
    work = plan(store, listing, job.retry_errors)
    todo = work.todo
    log.info("%d videos found, %d already indexed, %d failed before (--retry-errors tries them again), %d to index; "
             "%d inputs are not videos or cannot be read", len(sources), work.indexed, work.failed_before, len(todo),
             len(listing.errors))
    videos = moments = errors = 0
    if todo:
        if not ray.is_initialized():
            ray.init()  # joins the cluster of `ray job submit` (RAY_ADDRESS), else starts a local one
        sampling = SamplingConfig(frames=encoder.frames, size=encoder.image_size[0])
        encoder_cpus = job.encoder_cpus or (1.0 if job.gpus_per_encoder else max(
            1.0, (ray.cluster_resources().get("CPU", 1.0) - job.decoders * job.decoder_cpus) / job.encoders))
        # Ray caps an actor's threads at its whole CPUs (OMP_NUM_THREADS); the encoder sets its own.
        settings = EncodeSettings(encoder=encoder.config(), threads=max(1, round(encoder_cpus)))
        # Decoding runs in an isolated process inside each decoder actor, so a crashing file never
        # kills an actor; a lost actor (node failure, kill -9) is restarted and its batch retried a
        # bounded number of times instead of Ray's default of forever.
        retries = {"max_restarts": 3, "max_task_retries": 3}  # Ray Data takes these as remote args only
        dataset = (
            ray.data.from_items([dict(zip(("uri", "key", "metadata"), row))
                                 for row in zip(*sources_batch(todo).values())])
            .map_batches(DecodeVideos, fn_constructor_kwargs={"sampling": sampling, "moments": job.moments},
                         batch_size=1, compute=ray.data.ActorPoolStrategy(size=job.decoders), num_cpus=job.decoder_cpus,
                         batch_format="numpy", **retries)
            .map_batches(EncodeClips, fn_constructor_kwargs={"settings": settings}, batch_size=job.batch_size,
                         compute=ray.data.ActorPoolStrategy(size=job.encoders), num_gpus=job.gpus_per_encoder,
                         num_cpus=encoder_cpus, batch_format="numpy", **retries)
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            counts = write(store, batch)
            videos, moments, errors = videos + counts[0], moments + counts[1], errors + counts[2]
            log.info("indexed %d/%d videos (%d moments), %d errors, %.1f videos/s", videos, len(todo), moments,
                     errors, (videos + errors) / (time.perf_counter() - started))
    pruned = store.prune(listing.covers, listing.uris()) if job.prune else None
    index = store.ensure_index()
    seconds = time.perf_counter() - started
    failed = failures(store, listing.uris())
    summary = {"db": job.db, "table": job.table, "found": len(sources), "already_indexed": work.indexed,
               "failed_before": work.failed_before, "videos": videos, "moments": moments, "errors": failed["count"],
               **({"pruned": pruned} if pruned is not None else {}),
               "rows_in_table": store.count(), "ann_index": index, "seconds": round(seconds, 1),
               "videos_per_s": round((videos + errors) / seconds, 2), "failures": failed}
    if query:
        results = Searcher(store, encoder).text(query, k=3)
        summary["search"] = {"query": query, "expected": expected, "results": [result.to_dict() for result in results]}
    return summary


def list_errors(db: str, table: str = "videos") -> list[dict]:
    """The whole errors table, by uri: what is not indexed and why."""
    return Store.open(db, table=table).errors().sort_by("uri").to_pylist()


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--decoders", type=int, default=1, help="decoding actors (default: %(default)s)")
    parser.add_argument("--decoder-cpus", type=float, default=0.5, help="CPUs per decoding actor (default: %(default)s)")
    parser.add_argument("--encoders", type=int, default=1, help="encoder actors (default: %(default)s)")
    parser.add_argument("--encoder-cpus", type=float, help="CPUs per encoder actor (default: 1 with GPUs, else what decoders leave)")
    parser.add_argument("--gpus-per-encoder", type=float, default=0.0, help="GPUs per encoder actor, e.g. 1 (default: CPU)")
    parser.add_argument("--moment-length", type=float, default=10.0, help="moment window in seconds (default: %(default)s)")
    parser.add_argument("--moment-stride", type=float, default=10.0, help="moment stride in seconds (default: %(default)s)")
    parser.add_argument("--moments-after", type=float, default=20.0, help="videos at least this long get moments (default: %(default)s)")
    parser.add_argument("--sample-videos", type=int, default=40, help="size of the generated sample set (no inputs)")
    parser.add_argument("--cache", default=".cache/centerclip", help="folder for the generated sample set")
    parser.add_argument("--query", help="a text search to run when indexing is done")
    parser.add_argument("--prune", action="store_true",
                        help="remove rows and errors of files no longer under the listed folders, globs and prefixes")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try again the inputs that failed before and have not changed (skipped by default)")
    parser.add_argument("--list-errors", action="store_true",
                        help="print the errors table of --db/--table (one JSON object per line) and exit")
    return parser


def parse_args(argv: list[str] | None = None) -> IndexJob:
    return job_from_args(build_parser().parse_args(argv))


def job_from_args(parsed: argparse.Namespace) -> IndexJob:
    args = vars(parsed)
    args.pop("list_errors")
    moments = MomentConfig(args.pop("moment_length"), args.pop("moment_stride"), args.pop("moments_after"))
    return IndexJob(inputs=tuple(args.pop("inputs")), moments=moments, **args)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("centerclip").setLevel(logging.INFO)  # our progress, without every library's INFO lines
    args = build_parser().parse_args(argv)
    if args.list_errors:
        errors = list_errors(args.db, args.table)
        for error in errors:
            print(json.dumps({**error, "time": error["time"].isoformat()}))
        return {"errors": errors}
    summary = run(job_from_args(args))
    print(json.dumps({key: value for key, value in summary.items() if key not in ("search", "failures")}, indent=2))
    if summary["failures"]["count"]:
        print("\n" + format_failures(summary, summary["db"], summary["table"]))
    if "search" in summary:
        expected = summary["search"]["expected"]
        print(f"\nsearch: {summary['search']['query']!r}" + (f" (it describes {expected})" if expected else ""))
        for rank, result in enumerate(summary["search"]["results"], 1):
            span = "whole video" if result["start"] is None else f"{result['start']:.1f}-{result['end']:.1f} s"
            print(f"  {rank}. {result['score']:.3f}  {result['uri']}  ({span})")
    return summary


if __name__ == "__main__":
    main()
