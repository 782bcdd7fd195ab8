"""Contrastive fine-tuning of a VideoEncoder (CLIP4Clip-style), with or without token clustering.

Plain PyTorch: pipelines/train.py runs the same loop on Ray Train workers. Everything random is a
function of (seed, step), so a run resumed from a checkpoint takes the same batches and captions
as an uninterrupted one and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model.checkpoint import load_state_dict, save_checkpoint
from ..model.encoder import VideoEncoder, contrastive_loss
from ..media.frames import FrameSet
from .config import PRECISION_NAMES, TrainConfig

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
TRAINING_STATE = "training_state.pt"


@dataclass(frozen=True)
class Shard:
    """This worker's part of every global batch, and how to see the other workers' embeddings."""

    rank: int = 0
    world: int = 1

    def gather(self, embeddings: torch.Tensor) -> torch.Tensor:
        """All workers' embeddings, in rank order, keeping the gradient of every part."""
        if self.world == 1:
            return embeddings
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(embeddings))


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    if config.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return PRECISIONS[config.precision]


def batch_indices(step: int, videos: int, batch_size: int, seed: int) -> np.ndarray:
    """The videos of global batch ``step``: epochs walk through seeded permutations."""
    per_epoch = videos // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {videos} training videos")
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(videos)
    return order[position * batch_size:(position + 1) * batch_size]


def caption_choice(step: int, counts: np.ndarray, seed: int) -> np.ndarray:
    """One caption per video of the batch, drawn anew at every step."""
    return np.random.default_rng([seed, step, 1]).integers(0, counts)


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(encoder: VideoEncoder, config: TrainConfig, pretrained: bool) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings and the logit scale (as in CLIP)."""
    decay, no_decay = [], []
    for name, parameter in encoder.clip.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(parameter)
    lr = config.pretrained_lr if pretrained else config.lr
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )


def latest_checkpoint(output: str | Path) -> Path | None:
    steps = sorted(Path(output).glob("step_*/" + TRAINING_STATE))
    return steps[-1].parent if steps else None


def save_training_checkpoint(folder: Path, encoder: VideoEncoder, optimizer, step: int, config: TrainConfig,
                             metrics: dict) -> Path:
    meta = {"model": encoder.model_name, "schedule": str(encoder.schedule), "frames": encoder.frames,
            "step": step, "metrics": metrics, "train_config": asdict(config)}
    save_checkpoint(folder, encoder.clip, meta)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, folder / TRAINING_STATE)
    return folder


def restore_training_state(folder: Path, encoder: VideoEncoder, optimizer) -> int:
    encoder.clip.load_state_dict(load_state_dict(folder))
    state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def train(
    encoder: VideoEncoder,
    data: FrameSet,
    config: TrainConfig,
    *,
    output: str | Path | None = None,
    resume_from: str | Path | None = None,
    pretrained: bool = False,
    shard: Shard = Shard(),
    model: torch.nn.Module | None = None,
    report: Callable[[dict, Path | None], None] | None = None,
) -> dict:
    """Train ``encoder`` on ``data`` for ``config.steps`` global steps; returns the last metrics.
    Checkpoints go to ``output``/step_NNNNNNN; ``resume_from`` (one of them) continues a run.

    ``model`` is what runs forward and backward: a DistributedDataParallel wrapper of ``encoder``
    on Ray Train, else ``encoder`` itself. ``report(metrics, checkpoint_folder)``
    is called every ``log_every`` steps and at each checkpoint."""
    device = encoder.clip.logit_scale.device
    model = model or encoder
    dtype = autocast_dtype(config, device)
    encoder.clip.set_grad_checkpointing(config.grad_checkpointing)
    encoder.train()
    optimizer = make_optimizer(encoder, config, pretrained)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start = 0
    if resume_from is not None:
        start = restore_training_state(Path(resume_from), encoder, optimizer)
    if config.batch_size % shard.world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by {shard.world} workers")
    local = config.batch_size // shard.world
    metrics: dict = {}
    clock = time.perf_counter()
    for step in range(start, config.steps):
        indices = batch_indices(step, len(data), config.batch_size, config.seed)
        captions = caption_choice(step, data.caption_counts[indices], config.seed)
        mine = slice(shard.rank * local, (shard.rank + 1) * local)
        video = encoder.preprocess(data.batch(indices[mine]).to(device))
        texts = [data.captions[i][c] for i, c in zip(indices[mine], captions[mine])]
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * learning_rate_factor(step, config)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            video_embeddings, text_embeddings, scale = model(video, texts)
            logits = scale * shard.gather(text_embeddings) @ shard.gather(video_embeddings).T
            loss = contrastive_loss(logits.float())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(encoder.clip.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            encoder.clip.logit_scale.clamp_(0, math.log(100))
        done = step + 1
        metrics = {"step": done, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                   "logit_scale": encoder.clip.logit_scale.exp().item(),
                   "videos_per_s": (done - start) * config.batch_size / (time.perf_counter() - clock)}
        at_checkpoint = done == config.steps or (config.checkpoint_every and done % config.checkpoint_every == 0)
        folder = None
        if at_checkpoint and output is not None and shard.rank == 0:
            folder = save_training_checkpoint(Path(output) / f"step_{done:07d}", encoder, optimizer, done, config, metrics)
        if report and (at_checkpoint or done % config.log_every == 0):
            report(metrics, folder)
    encoder.eval()
    return metrics
