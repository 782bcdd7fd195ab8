"""Text-video retrieval evaluation on a benchmark split, for one or more clustering schedules.

    python pipelines/evaluate.py                                   # built-in model, synthetic test split
    python pipelines/evaluate.py --schedule none --schedule kmedoids@3:4x49 --dsl --json results.json
    python pipelines/evaluate.py --dataset msrvtt --root /data/msrvtt --model ViT-B-32 --pretrained openai
    python pipelines/evaluate.py --ray                             # encode the split through Ray Data

Prints, per schedule, both directions' R@1/5/10, median and mean rank, each with its 95% bootstrap
interval over queries (DSL beside them with --dsl), GFLOPs per video, and the same on the temporal
queries where the benchmark flags them. Video->text follows the published protocol unless
--video-to-text every-caption (see centerclip.train.metrics); the output names the protocol used.
The split is decoded once (cached); videos that cannot be decoded are listed, not dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

# Light imports only: torch and Ray load inside the functions that use them, after parsing.
from .. import cli, datasets
from ..datasets.msrvtt import EVALUATION_VIDEOS
from ..train.benchmark import EvaluateJob, run


def cell(values: dict, name: str) -> str:
    """``26.2 [24.5, 27.9]``: a metric and its 95% interval where there is one."""
    if f"{name}_low" not in values:
        return f"{values[name]:.1f}"
    return f"{values[name]:.1f} [{values[name + '_low']:.1f}, {values[name + '_high']:.1f}]"


def format_table(results: list[dict]) -> str:
    from ..train.metrics import METRICS

    width = 18 if any("R@1_low" in values for result in results for values in result["all"].values()) else 6
    lines = [f"{'schedule':34s} {'subset':9s} {'direction':16s} " + " ".join(f"{name:>{width}s}" for name in METRICS)
             + f" {'GFLOPs':>7s}"]
    for result in results:
        for subset in ("all", "temporal"):
            for direction, values in result.get(subset, {}).items():
                lines.append(f"{result['schedule']:34s} {subset:9s} {direction:16s} "
                             + " ".join(f"{cell(values, name):>{width}s}" for name in METRICS)
                             + f" {result['gflops_per_video']:7.2f}")
    if results:
        first = results[0]
        intervals = f"95% bootstrap intervals over queries ({first['bootstrap_resamples']} resamples, seeded)" \
            if first["bootstrap_resamples"] else "no intervals (--bootstrap 0)"
        lines.append(f"{first['videos']} videos, {first['captions']} captions; video->text protocol: "
                     f"{first['video_to_text_protocol']}; {intervals}")
    return "\n".join(lines)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="synthetic", choices=sorted(datasets.LOADERS), help="benchmark (default: synthetic)")
    parser.add_argument("--root", help="benchmark annotation folder (synthetic: generated under --cache if omitted)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--synthetic-videos", type=int, default=EVALUATION_VIDEOS,
                        help=f"videos in the generated synthetic set (default: {EVALUATION_VIDEOS}, a 2,500-video test split)")
    parser.add_argument("--model", help="open_clip model name (default: the built-in model)")
    parser.add_argument("--pretrained", help="open_clip tag, weights file, or centerclip checkpoint")
    parser.add_argument("--schedule", action="append", default=[], type=cli.schedule,
                        help="schedule to evaluate, e.g. kmedoids@3:4x49 (repeatable; default: the model's)")
    parser.add_argument("--frames", type=cli.positive(int), help="frames per video (default: the model's)")
    parser.add_argument("--decode", type=cli.decode_options, default="", help=cli.DECODE_HELP)
    parser.add_argument("--dsl", action="store_true", help="also report dual-softmax re-ranked numbers")
    parser.add_argument("--video-to-text", default="best-caption", choices=("best-caption", "every-caption"),  # metrics.VIDEO_TO_TEXT
                        help="multi-caption video->text protocol: best-caption (published, default) or every-caption")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--ray", action="store_true", help="encode the videos through Ray Data")
    parser.add_argument("--batch-size", type=cli.positive(int), default=32, help="videos per encoder batch")
    parser.add_argument("--cache", default=".cache/centerclip", help="folder for generated data and decoded frames")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-' for stdout only)")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[EvaluateJob, str | None]:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args.pop("debug")
    cli.check_dataset_root(parser, args["dataset"], args["root"])
    output = args.pop("json")
    args["schedules"] = tuple(args.pop("schedule"))
    return EvaluateJob(**args), output


def main(argv: list[str] | None = None) -> list[dict]:
    job, output = parse_args(argv)
    results = run(job)
    if output == "-":
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
        if output:
            Path(output).write_text(json.dumps(results, indent=2))
    return results
