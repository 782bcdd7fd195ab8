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

from .. import cli  # light: torch, Ray and LanceDB load after the arguments are parsed
from ..index.engine import list_errors
from ..index.job import IndexJob, MomentConfig
from ..index.sample import SAMPLE_MOMENTS


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
    parser.add_argument("--decoder-cpus", type=cli.positive(float), help="CPUs per decoding actor (default: 0.5, at most half the "
                                                                         "smallest node)")
    parser.add_argument("--encoders", type=cli.positive(int), help="encoder actors (default: from 1 up to one per GPU the cluster "
                                                                   "has or adds; on CPUs, as many as fit beside a decoder)")
    parser.add_argument("--encoder-cpus", type=cli.positive(float), help="CPUs per encoder actor (default: 1 with GPUs, else "
                                                                         "what a decoder leaves on the node, at most 8)")
    parser.add_argument("--gpus-per-encoder", type=float, default=0.0, help="GPUs per encoder actor, e.g. 1 (default: CPU)")
    parser.add_argument("--stall-minutes", type=cli.positive(float, zero=True), default=IndexJob.stall_minutes,
                        help="stop, saying why, when nothing is indexed for this long and no node joins or leaves the "
                             "cluster (default: %(default)s; 0: wait forever)")
    parser.add_argument("--fp32", action="store_true", help="encode in float32 (default: fp16 on GPUs, bfloat16 on CPUs "
                                                           "that compute it natively: half the CPU per video)")
    parser.add_argument("--decode", type=cli.decode_options, default=IndexJob.decode, help=cli.DECODE_HELP)
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
    given = {name: args.pop(flag) for name, flag in
             (("length", "moment_length"), ("stride", "moment_stride"), ("min_duration", "moments_after"))}
    defaults = {} if args["inputs"] else SAMPLE_MOMENTS
    moments = MomentConfig(**{**defaults, **{name: value for name, value in given.items() if value is not None}})
    return IndexJob(inputs=tuple(args.pop("inputs")), moments=moments, **args), as_json


def main(argv: list[str] | None = None) -> dict:
    from ..index.progress import IndexProgress, format_summary
    from ..search.after_indexing import index_and_search

    parsed = build_parser().parse_args(argv)
    if parsed.list_errors:
        errors = list_errors(parsed.db, parsed.table)
        for error in errors:
            print(json.dumps({**error, "time": error["time"].isoformat()}))
        return {"errors": errors}
    job, as_json = parse_args(argv)
    summary = index_and_search(job, progress=IndexProgress)
    print(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    return summary
