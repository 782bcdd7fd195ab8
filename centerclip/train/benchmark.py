"""Text-video retrieval on a benchmark split, for one or more clustering schedules: the split is
decoded once (cached), each schedule's embeddings are computed (here, or through Ray Data with
``ray``) and scored with both directions' metrics and the GFLOPs per video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..datasets.msrvtt import EVALUATION_VIDEOS

if TYPE_CHECKING:
    import torch

    from ..media.frames import FrameSet
    from ..model.encoder import VideoEncoder
    from ..model.registry import EncoderConfig


@dataclass(frozen=True)
class EvaluateJob:
    dataset: str = "synthetic"
    root: str | None = None
    split: str = "test"
    synthetic_videos: int = EVALUATION_VIDEOS
    model: str | None = None
    pretrained: str | None = None
    schedules: tuple[str, ...] = ()  # empty: the model's own schedule
    frames: int | None = None
    dsl: bool = False
    video_to_text: str = "best-caption"  # or every-caption (centerclip.train.metrics)
    bootstrap: int = 1000  # resamples for the 95% intervals; 0: none
    ray: bool = False
    batch_size: int = 32
    cache: str = ".cache/centerclip"
    decode: str = ""  # decoder options (SamplingConfig.parse_options)


def load_split(job: EvaluateJob, encoder: VideoEncoder) -> tuple[FrameSet, Path]:
    from ..media.frames import benchmark_split
    from ..media.decoding import SamplingConfig

    sampling = SamplingConfig.parse_options(job.decode, frames=encoder.frames, size=encoder.image_size[0])
    data = benchmark_split(job.dataset, job.root, job.split, sampling, job.cache, job.synthetic_videos)
    return data, Path(data.frames.filename).parent


class EncodeVideos:
    """Ray Data stage: one encoder per actor, video embeddings for batches of split indices. The
    actor gets the driver's weights, so both paths score the very same model."""

    def __init__(self, *, config: EncoderConfig, weights, frames_folder: str):
        import ray

        from ..model.encoder import VideoEncoder
        from ..media.frames import FrameSet

        self.encoder = VideoEncoder.create(config).eval()
        self.encoder.clip.load_state_dict(ray.get(weights))  # an ObjectRef: the weights travel once
        self.data = FrameSet.load(frames_folder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from .evaluation import embed_videos

        with torch.inference_mode():
            vectors = embed_videos(self.encoder, self.data, batch["index"])
        return {"index": batch["index"], "vector": vectors.numpy()}


def embed_with_ray(encoder: VideoEncoder, frames_folder: Path, videos: int, batch_size: int) -> torch.Tensor:
    import ray
    import torch

    from ..model.registry import EncoderConfig

    config = EncoderConfig(model=encoder.model_name, schedule=encoder.schedule, frames=encoder.frames)
    weights = ray.put(encoder.clip.state_dict())
    dataset = ray.data.range(videos).rename_columns({"id": "index"}).map_batches(
        EncodeVideos, fn_constructor_kwargs={"config": config, "weights": weights, "frames_folder": str(frames_folder)},
        batch_size=batch_size, concurrency=1, batch_format="numpy",
    )
    rows = dataset.take_all()
    order = np.argsort([row["index"] for row in rows])
    return torch.from_numpy(np.stack([rows[i]["vector"] for i in order]))


def run(job: EvaluateJob) -> list[dict]:
    from ..model.encoder import VideoEncoder
    from ..model.registry import EncoderConfig
    from ..model.schedule import Schedule
    from .evaluation import evaluate
    from ..model.flops import VisionShape, video_cost

    base = EncoderConfig(model=job.model, pretrained=job.pretrained, frames=job.frames)
    encoder = VideoEncoder.create(base)
    schedules = [Schedule.parse(text) for text in job.schedules] or [encoder.schedule]
    for schedule in schedules:  # fail before decoding anything
        schedule.validate(layers=len(encoder.visual.transformer.resblocks), frames=encoder.frames,
                          tokens_per_frame=VisionShape.of_model(encoder.clip).tokens_per_frame)
    data, frames_folder = load_split(job, encoder)
    shape = VisionShape.of_model(encoder.clip)
    results = []
    for schedule in schedules:
        encoder.set_schedule(schedule)
        videos = None
        if job.ray:
            videos = embed_with_ray(encoder, frames_folder, len(data), job.batch_size)
        metrics = evaluate(encoder, data, dsl=job.dsl, videos=videos, batch_size=job.batch_size,
                           video_to_text=job.video_to_text, bootstrap=job.bootstrap)
        results.append({
            "model": encoder.model_name, "pretrained": job.pretrained, "schedule": str(schedule),
            "dataset": job.dataset, "split": job.split, "videos": len(data), "captions": int(data.caption_counts.sum()),
            "frames": encoder.frames, "video_to_text_protocol": job.video_to_text, "bootstrap_resamples": job.bootstrap,
            "gflops_per_video": video_cost(shape, schedule, encoder.frames).gflops, **metrics,
        })
    return results


