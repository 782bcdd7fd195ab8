"""Retrieval evaluation of an encoder on a decoded split (a FrameSet)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model.encoder import VideoEncoder
from ..media.frames import FrameSet
from .metrics import retrieval_metrics


@torch.no_grad()
def embed_videos(encoder: VideoEncoder, data: FrameSet, indices: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    device = encoder.clip.logit_scale.device
    parts = [encoder.encode_video(encoder.preprocess(data.batch(indices[i:i + batch_size]).to(device))).float()
             for i in range(0, len(indices), batch_size)]
    return F.normalize(torch.cat(parts), dim=-1)


@torch.no_grad()
def embed_captions(encoder: VideoEncoder, data: FrameSet, batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """Every caption of ``data`` -> ([C, D] embeddings, [C] index of each caption's video)."""
    texts = [caption for captions in data.captions for caption in captions]
    parts = [encoder.encode_text(texts[i:i + batch_size]).float() for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(parts), dim=-1), np.repeat(np.arange(len(data)), data.caption_counts)


def evaluate(encoder: VideoEncoder, data: FrameSet, *, dsl: bool = False, videos: torch.Tensor | None = None,
             batch_size: int = 32, video_to_text: str = "best-caption", bootstrap: int = 1000) -> dict:
    """Both directions' R@1/5/10, MdR, MnR with their 95% bootstrap intervals (and DSL beside
    them); on benchmarks that flag temporal queries, the same on the temporal subset. ``videos``
    are precomputed video embeddings; ``video_to_text`` is the protocol (centerclip.train.metrics)."""
    encoder.eval()
    if videos is None:
        videos = embed_videos(encoder, data, np.arange(len(data)), batch_size)
    captions, caption_video = embed_captions(encoder, data)
    videos = videos.to(captions.device)
    options = {"dsl": dsl, "video_to_text": video_to_text, "bootstrap": bootstrap}
    results = {"all": retrieval_metrics(captions, videos, torch.from_numpy(caption_video), **options)}
    if data.temporal is not None and data.temporal.any():
        results["temporal"] = retrieval_metrics(captions, videos, torch.from_numpy(caption_video),
                                                queries=torch.from_numpy(data.temporal), **options)
    return results
