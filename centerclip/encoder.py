"""VideoEncoder: an open_clip CLIP model whose vision tower encodes videos, optionally with token
clustering, and whose text tower encodes queries."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import patch
from .checkpoint import BUILTIN, WEIGHTS, checkpoint_meta, create_clip
from .models import open_clip  # with our model names registered
from .schedule import Schedule
from .video import model_preprocessing, preprocess

DEFAULT_MODEL = "centerclip-tiny"


@dataclass(frozen=True)
class EncoderConfig:
    """Which model to build. Fields left None come from a centerclip checkpoint's metadata when
    ``pretrained`` is one, else from the defaults: the built-in model, no reduction, the model's
    frames (see default_frames)."""

    model: str | None = None
    pretrained: str | None = None
    schedule: Schedule | None = None
    frames: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        schedule = values.get("schedule")
        if isinstance(schedule, str):
            schedule = Schedule.parse(schedule)
        elif isinstance(schedule, dict):
            schedule = Schedule.from_dict(schedule)
        return cls(**{**values, "schedule": schedule})


def default_frames(model: str) -> int:
    """Frames per video when neither the config nor a checkpoint says: the built-in model's own for
    its architecture (it was trained on 8), else 12 (the paper's setting for CLIP models)."""
    if model == DEFAULT_MODEL:
        return (checkpoint_meta(BUILTIN) or {}).get("frames", 12)
    return 12


def mean_pool(per_segment: torch.Tensor) -> torch.Tensor:
    """meanP: [B, S, D] segment (or frame) embeddings -> [B, D]: normalise each, average, normalise."""
    return F.normalize(F.normalize(per_segment, dim=-1).mean(1), dim=-1)


class VideoEncoder(nn.Module):
    def __init__(self, clip: nn.Module, tokenizer, *, schedule: Schedule = Schedule(), frames: int = 12,
                 model_name: str = DEFAULT_MODEL):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.frames = frames
        self.model_name = model_name
        self.pretrained: str | None = None  # where the weights came from, when create() loaded them
        self.schedule = Schedule()
        self.set_schedule(schedule)

    @classmethod
    def create(cls, config: EncoderConfig = EncoderConfig()) -> VideoEncoder:
        """Build from an open_clip model name (ours or open_clip's) and optional weights: an
        open_clip pretrained tag, a weights file, or a centerclip checkpoint (whose metadata
        supplies the model, schedule and frames). With neither, the built-in default model."""
        pretrained = config.pretrained
        if config.model is None and pretrained is None:
            if (BUILTIN / WEIGHTS).is_file():
                pretrained = str(BUILTIN)
            else:
                logging.warning("the built-in model's weights are not installed (%s): using random weights", BUILTIN)
        meta = (checkpoint_meta(pretrained) if pretrained else None) or {}
        model = config.model or meta.get("model") or DEFAULT_MODEL
        if meta and meta["model"] != model:
            raise ValueError(f"checkpoint {pretrained} holds a {meta['model']} model, not {model}")
        schedule = config.schedule or Schedule.parse(meta.get("schedule", "none"))
        frames = config.frames or meta.get("frames") or default_frames(model)
        encoder = cls(create_clip(model, pretrained), open_clip.get_tokenizer(model), schedule=schedule,
                      frames=frames, model_name=model)
        encoder.pretrained = pretrained
        return encoder

    def config(self) -> EncoderConfig:
        """What rebuilds this encoder elsewhere (a Ray actor, a sweep trial): same weights source,
        schedule and frames. Random weights cannot travel this way; weights from files can."""
        return EncoderConfig(model=self.model_name, pretrained=self.pretrained, schedule=self.schedule, frames=self.frames)

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[-1] if hasattr(self.clip, "text_projection") else self.visual.output_dim

    def set_schedule(self, schedule: Schedule) -> None:
        """Re-patch the vision tower (validated against this model and its frame count)."""
        self._validate(schedule, self.frames)
        patch.apply(self.visual, schedule)
        self.schedule = schedule

    def _validate(self, schedule: Schedule, frames: int) -> None:
        schedule.validate(layers=len(self.visual.transformer.resblocks), frames=frames,
                          tokens_per_frame=patch.tokens_per_frame(self.visual))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [..., H, W, 3] -> the model's normalised input [..., 3, S, S], as open_clip's
        own transform would make it (resize the shortest side, centre crop, mean/std)."""
        return preprocess(frames, **model_preprocessing(self.clip))

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] preprocessed frames -> [B, D] L2-normalised video embeddings."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must have shape [B, T, 3, H, W], got {tuple(frames.shape)}")
        videos, count, _, height, width = frames.shape
        if (height, width) != self.image_size:
            raise ValueError(f"frames are {height}x{width} but the model expects {self.image_size[0]}x{self.image_size[1]}")
        if count != self.frames:
            self._validate(self.schedule, count)
        patch.set_videos(self.visual, videos)
        dtype = self.visual.conv1.weight.dtype
        pooled = self.visual(frames.flatten(0, 1).to(dtype))
        if isinstance(pooled, tuple):  # open_clip models built with output_tokens=True
            pooled = pooled[0]
        return mean_pool(pooled.reshape(videos, -1, pooled.shape[-1]))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Captions or queries -> [B, D] L2-normalised text embeddings (long texts are truncated
        to the model's context length by the tokenizer)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings")
        device = self.clip.logit_scale.device
        tokens = self.tokenizer(list(texts)).to(device)
        return self.clip.encode_text(tokens, normalize=True)

    def forward(self, frames: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(video embeddings, text embeddings, logit scale): one training forward, so that
        DistributedDataParallel, wrapping the encoder, sees every parameter used inside it."""
        return self.encode_video(frames), self.encode_text(texts), self.clip.logit_scale.exp()

    def similarity(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """[Bt, D] x [Bv, D] normalised embeddings -> [Bt, Bv] logits (cosine times logit scale)."""
        return self.clip.logit_scale.exp() * text @ video.T

    def contrastive_loss(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the batch: pair i is text i with video i."""
        return contrastive_loss(self.similarity(text, video))


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a [B, B] text-to-video logit matrix whose diagonal are the pairs."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
