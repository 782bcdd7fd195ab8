"""Fine-tune the video encoder on a benchmark with Ray Train (DDP; CPU or GPU workers).

    python pipelines/train.py --dataset synthetic --steps 2000 --name tiny
    ray job submit --working-dir . -- python pipelines/train.py --dataset msrvtt --root /data/msrvtt \\
        --model ViT-B-32 --pretrained openai --schedule kmedoids@6:4x49 --workers 8 --gpu

The split is decoded once into a frame cache on the driver's disk (share it on multi-node
clusters through --cache on shared storage). Checkpoints (safetensors + metadata) go to
STORAGE/NAME through Ray Train; running the same command again resumes from the latest one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

# Light imports only: torch and Ray load inside the functions that use them, after parsing.
from .. import cli, datasets
from ..train.config import TrainConfig
from ..train.trainer import TrainJob, run


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="synthetic", choices=sorted(datasets.LOADERS), help="benchmark (default: synthetic)")
    parser.add_argument("--root", help="benchmark annotation folder (synthetic: generated under --cache if omitted)")
    parser.add_argument("--split", default="train", help="split to train on (default: train)")
    parser.add_argument("--synthetic-videos", type=int, default=2000, help="videos in the generated synthetic set")
    parser.add_argument("--model", help="open_clip model name (default: centerclip-tiny)")
    parser.add_argument("--pretrained", help="open_clip tag, weights file, or centerclip checkpoint to start from")
    parser.add_argument("--schedule", type=cli.schedule, default="none", help="token-clustering schedule, e.g. kmedoids@6:4x49")
    parser.add_argument("--frames", type=cli.positive(int),
                        help="frames sampled per video (default: the model's: 8 for the built-in model, a checkpoint's, else 12)")
    parser.add_argument("--workers", type=cli.positive(int), default=1, help="Ray Train workers (default: 1)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--storage", default="runs", help="checkpoint storage: a folder or s3://bucket/prefix")
    parser.add_argument("--name", default="centerclip", help="run name; the same name resumes the run")
    parser.add_argument("--cache", default=".cache/centerclip", help="folder for generated data and decoded frames")
    defaults = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        value = getattr(defaults, item.name)
        flag = f"--{item.name.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: --grad-checkpointing / --no-grad-checkpointing
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value,
                                help=f"training: {item.name.replace('_', ' ')} (default: {'on' if value else 'off'})")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"training: {item.name} (default: {value})")
    return parser


def parse_args(argv: list[str] | None = None) -> TrainJob:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args.pop("debug")
    cli.check_dataset_root(parser, args["dataset"], args["root"])
    train_config = TrainConfig(**{item.name: args.pop(item.name) for item in dataclasses.fields(TrainConfig)})
    return TrainJob(**args, train=train_config)


def main(argv: list[str] | None = None) -> dict:
    job = parse_args(argv)
    result = run(job)
    summary = {"metrics": result.metrics, "checkpoint": result.checkpoint.path if result.checkpoint else None}
    print(json.dumps(summary, indent=2, default=str))
    return summary
