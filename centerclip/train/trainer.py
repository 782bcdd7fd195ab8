"""A fine-tuning run on Ray Train: the split decoded once into a frame cache on the driver, then
DDP workers (CPU or GPU) train on their share of every global batch, and Ray Train keeps the
checkpoints (safetensors + metadata) under STORAGE/NAME; the same run again resumes."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import TrainConfig

if TYPE_CHECKING:
    import ray.train

    from ..model.encoder import VideoEncoder

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
    from ..model.encoder import VideoEncoder
    from ..model.registry import EncoderConfig
    from ..model.schedule import Schedule

    return VideoEncoder.create(EncoderConfig(model=job.model_name, pretrained=job.pretrained,
                                             schedule=Schedule.parse(job.schedule), frames=job.frames))


def prepare_frames(job: TrainJob, model: VideoEncoder) -> Path:
    """Decode the training split once (cached) at the model's frames and size; returns the frame
    cache's folder."""
    from ..media.frames import benchmark_split
    from ..media.decoding import SamplingConfig

    sampling = SamplingConfig(frames=model.frames, size=model.image_size[0])
    frames = benchmark_split(job.dataset, job.root, job.split, sampling, job.cache, job.synthetic_videos)
    return Path(frames.frames.filename).parent


def train_worker(config: dict) -> None:
    """Ray Train's per-worker loop: build the encoder, wrap it in DDP, train on this worker's
    share of every global batch, report metrics and checkpoints."""
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_model

    from ..media.frames import FrameSet
    from .loop import Shard, train

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
