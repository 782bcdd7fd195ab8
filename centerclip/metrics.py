"""Retrieval metrics on similarity matrices.

Ranks are pessimistic: a positive that ties with negatives is ranked after all of them, so a
constant similarity matrix scores as badly as it deserves. When a query has several positives
(video->text on multi-caption benchmarks), its best-ranked positive counts.
"""

from __future__ import annotations

import torch

RECALL_AT = (1, 5, 10)


def ranks(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """[Q, G] scores and a [Q, G] boolean mask of each query's positives -> [Q] ranks (1 = best):
    one plus the number of negatives scoring at least the query's best positive."""
    if similarity.shape != positives.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and positives {tuple(positives.shape)} differ in shape")
    if not positives.any(1).all():
        raise ValueError("every query needs at least one positive")
    best_positive = similarity.masked_fill(~positives, float("-inf")).amax(1, keepdim=True)
    return 1 + ((similarity >= best_positive) & ~positives).sum(1)


def summarise(query_ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), median rank and mean rank."""
    values = query_ranks.double()
    summary = {f"R@{k}": float((values <= k).double().mean() * 100) for k in RECALL_AT}
    summary["MdR"] = float(values.quantile(0.5))  # the mean of the two middle ranks when even
    summary["MnR"] = float(values.mean())
    return summary


def dual_softmax(similarity: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """Dual-softmax re-ranking (DSL): weight each score by a softmax over the other modality's
    queries, so a gallery item that every query likes is discounted. [Q, G] -> [Q, G]."""
    return similarity * torch.softmax(similarity * temperature, dim=0)


def retrieval_metrics(
    text: torch.Tensor, video: torch.Tensor, caption_video: torch.Tensor, *, dsl: bool = False,
    queries: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Both directions from L2-normalised embeddings: ``text`` [C, D] captions, ``video`` [V, D],
    ``caption_video`` [C] the index of each caption's video. Every caption is a text->video query;
    for video->text, a video's best-ranked caption counts. With ``dsl``, the dual-softmax numbers
    are added beside the raw ones. ``queries`` (bool [V]) restricts the queries to those videos and
    their captions (e.g. the temporal subset); the galleries stay whole."""
    caption_video = torch.as_tensor(caption_video, device=text.device)
    similarity = text.float() @ video.float().T  # [C, V]
    positives = caption_video[:, None] == torch.arange(len(video), device=text.device)[None, :]
    missing = (~positives.any(0)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"videos without any caption: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    videos = torch.ones(len(video), dtype=torch.bool) if queries is None else torch.as_tensor(queries, dtype=torch.bool)
    videos = videos.to(text.device)
    captions = videos[caption_video]
    scored = {"": (similarity, similarity.T)}
    if dsl:
        scored["_dsl"] = (dual_softmax(similarity), dual_softmax(similarity.T))
    results = {}
    for suffix, (text_to_video, video_to_text) in scored.items():
        results["text_to_video" + suffix] = summarise(ranks(text_to_video, positives)[captions])
        results["video_to_text" + suffix] = summarise(ranks(video_to_text, positives.T)[videos])
    return results
