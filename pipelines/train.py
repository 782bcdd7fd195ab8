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
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: sys.path[0] is pipelines/, the repository root holds centerclip/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Light imports only: torch and Ray load inside the functions that use them, after parsing.
from centerclip import cli, datasets  # noqa: E402
from centerclip.train.config import TrainConfig  # noqa: E402

if TYPE_CHECKING:
    import ray.train

    from centerclip import VideoEncoder

@dataclass(frozen=True)
class TrainJob:
    dataset: str = "synthetic"
    root: str | None = None  # the benchmark's annotation folder; synthetic: generated there if missing
    split: str = "train"
    synthetic_videos: int = 2000
    model: str | None = None  # default: the built-in model's architecture, from scratch
    pretrained: str | None = None
    schedule: str = "none"
    frames: int | None = None  # default: the model's (the built-in model's 8, a checkpoint's, else 12)
    workers: int = 1
    gpu: bool = False
    storage: str = "runs"
    name: str = "centerclip"
    cache: str = ".cache/centerclip"
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return self.model or "centerclip-tiny"


def encoder(job: TrainJob) -> VideoEncoder:
    from centerclip import EncoderConfig, Schedule, VideoEncoder

    return VideoEncoder.create(EncoderConfig(model=job.model_name, pretrained=job.pretrained,
                                             schedule=Schedule.parse(job.schedule), frames=job.frames))


def prepare_frames(job: TrainJob, model: VideoEncoder) -> Path:
    """Decode the training split once (cached) at the model's frames and size; returns the frame
    cache's folder."""
    from centerclip.media.frames import benchmark_split
    from centerclip.media.decoding import SamplingConfig

    sampling = SamplingConfig(frames=model.frames, size=model.image_size[0])
    frames = benchmark_split(job.dataset, job.root, job.split, sampling, job.cache, job.synthetic_videos)
    return Path(frames.frames.filename).parent


def train_worker(config: dict) -> None:
    """Ray Train's per-worker loop: build the encoder, wrap it in DDP, train on this worker's
    share of every global batch, report metrics and checkpoints."""
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_model

    from centerclip.media.frames import FrameSet
    from centerclip.train.loop import Shard, train

    job = TrainJob(**{**config["job"], "train": TrainConfig(**config["job"]["train"])})
    context = ray.train.get_context()
    torch.manual_seed(job.train.seed)
    video_encoder = encoder(job)
    video_encoder.to(get_device())
    model = prepare_model(video_encoder)
    data = FrameSet.load(config["frames_folder"])
    resume_from = None
    if checkpoint := ray.train.get_checkpoint():
        resume_from = Path(checkpoint.to_directory())

    def report(metrics: dict, folder: Path | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    with tempfile.TemporaryDirectory() as output:
        train(video_encoder, data, job.train, output=output, resume_from=resume_from, pretrained=job.pretrained is not None,
              shard=Shard(context.get_world_rank(), context.get_world_size()), model=model, report=report)


def run(job: TrainJob) -> ray.train.Result:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    model = encoder(job)  # on the driver: a bad model, weights file or schedule fails here, before Ray starts
    job = dataclasses.replace(job, frames=model.frames)
    frames_folder = prepare_frames(job, model)
    config = {"job": dataclasses.asdict(job), "frames_folder": str(frames_folder)}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.gpu),
        run_config=RunConfig(
            name=job.name,
            storage_path=str(Path(job.storage).resolve()) if "://" not in job.storage else job.storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=2),
        ),
    )
    return trainer.fit()


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


if __name__ == "__main__":
    cli.run(main)
