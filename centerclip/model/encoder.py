"""VideoEncoder: an open_clip CLIP model whose vision tower encodes videos, optionally with token
clustering, and whose text tower encodes queries."""

from __future__ import annotations

import logging
import torch
import torch.nn.functional as F
from torch import nn

from . import patch
from .checkpoint import create_clip
from .registry import BUILTIN, DEFAULT_MODEL, EncoderConfig, default_frames
from .openclip import open_clip  # with our model names registered
from .schedule import Schedule
from .weight_files import WEIGHTS
from ..media.pixels import model_preprocessing, preprocess

__all__ = ["DEFAULT_MODEL", "EncoderConfig", "VideoEncoder", "contrastive_loss", "default_frames", "mean_pool"]


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
        if config.model is None and config.pretrained is None and not (BUILTIN / WEIGHTS).is_file():
            logging.warning("the built-in model's weights are not installed (%s): using random weights", BUILTIN)
        config = config.resolved()
        encoder = cls(create_clip(config.model, config.pretrained), open_clip.get_tokenizer(config.model),
                      schedule=config.schedule, frames=config.frames, model_name=config.model)
        encoder.pretrained = config.pretrained
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

    def unread_tokens(self, text: str) -> tuple[int, int]:
        """(tokens of ``text`` the text tower cannot read, its context length): the tokenizer
        keeps the first context-length tokens, start and end of text included, and drops the rest."""
        context = int(getattr(self.tokenizer, "context_length", 0) or 0)
        encode = getattr(self.tokenizer, "encode", None)
        if not context or encode is None:  # a tokenizer that cannot say: nothing to report
            return 0, context
        return max(0, len(encode(text)) + 2 - context), context

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
