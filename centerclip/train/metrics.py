"""Retrieval metrics on similarity matrices, with bootstrap confidence intervals.

Ranks are pessimistic: a positive that ties with negatives is ranked after all of them, so a
constant similarity matrix scores as badly as it deserves. When a query has several positives,
its best-ranked positive counts.

Video->text on benchmarks with several captions per video (MSVD, MSR-VTT train) has two protocols:
- ``best-caption`` (the published one, our default): each candidate video is scored by the best of
  its captions, and the query video is ranked among the candidate videos;
- ``every-caption``: every caption of every other video competes with the query's own captions.
On one caption per video they are the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

RECALL_AT = (1, 5, 10)
METRICS = (*(f"R@{k}" for k in RECALL_AT), "MdR", "MnR")
VIDEO_TO_TEXT = ("best-caption", "every-caption")


def ranks(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """[Q, G] scores and a [Q, G] boolean mask of each query's positives -> [Q] ranks (1 = best):
    one plus the number of negatives scoring at least the query's best positive."""
    if similarity.shape != positives.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and positives {tuple(positives.shape)} differ in shape")
    if not positives.any(1).all():
        raise ValueError("every query needs at least one positive")
    best_positive = similarity.masked_fill(~positives, float("-inf")).amax(1, keepdim=True)
    return 1 + ((similarity >= best_positive) & ~positives).sum(1)


def _statistics(query_ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric along the last axis of [..., Q] ranks (so many resamples at once)."""
    values = {f"R@{k}": (query_ranks <= k).mean(-1) * 100 for k in RECALL_AT}
    values["MdR"] = np.median(query_ranks, axis=-1)  # the mean of the two middle ranks when even
    values["MnR"] = query_ranks.mean(-1)
    return values


def summarise(query_ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), median rank and mean rank."""
    return {name: float(value) for name, value in _statistics(np.asarray(query_ranks, dtype=np.float64)).items()}


def _resampled(queries: int, statistics: Callable[[np.ndarray], dict[str, np.ndarray]], resamples: int,
               seed: int) -> dict[str, np.ndarray]:
    """``statistics`` of ``resamples`` draws of the queries with replacement (seeded), a few million
    ranks at a time: [resamples] values per metric."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, 2**22 // max(1, queries))
    drawn: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for start in range(0, resamples, per_chunk):
        picks = rng.integers(0, queries, size=(min(per_chunk, resamples - start), queries))
        for name, values in statistics(picks).items():
            drawn[name].append(values)
    return {name: np.concatenate(parts) for name, parts in drawn.items()}


def bootstrap_intervals(query_ranks: torch.Tensor, *, resamples: int = 1000, level: float = 0.95,
                        seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap over queries: ``NAME_low`` and ``NAME_high`` for every metric. The
    queries are resampled with replacement ``resamples`` times (seeded: the same ranks give the
    same interval)."""
    values = np.asarray(query_ranks, dtype=np.float64)
    drawn = _resampled(len(values), lambda picks: _statistics(values[picks]), resamples, seed)
    tail = (1 - level) / 2 * 100
    intervals = {}
    for name, statistic in drawn.items():
        low, high = np.percentile(statistic, [tail, 100 - tail])
        intervals.update({f"{name}_low": float(low), f"{name}_high": float(high)})
    return intervals


def paired_differences(baseline: torch.Tensor, other: torch.Tensor, *, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``other`` minus ``baseline`` for every metric, from the ranks of the same queries under two
    systems, with a paired percentile bootstrap interval: each resample draws queries once and
    scores both systems on them, so the interval is of the difference, not of either metric.
    Returns {name: (difference, low, high)}; an interval that holds 0 means no difference shown."""
    first, second = (np.asarray(ranks, dtype=np.float64) for ranks in (baseline, other))
    if first.shape != second.shape:
        raise ValueError(f"paired ranks need the same queries, got {first.shape} and {second.shape}")

    def differences(picks: np.ndarray) -> dict[str, np.ndarray]:
        before, after = _statistics(first[picks]), _statistics(second[picks])
        return {name: after[name] - before[name] for name in METRICS}

    drawn = _resampled(len(first), differences, resamples, seed)
    tail = (1 - level) / 2 * 100
    observed = {name: _statistics(second)[name] - _statistics(first)[name] for name in METRICS}
    return {name: (float(observed[name]), *map(float, np.percentile(drawn[name], [tail, 100 - tail])))
            for name in METRICS}


def dual_softmax(similarity: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """Dual-softmax re-ranking (DSL): weight each score by a softmax over the other modality's
    queries, so a gallery item that every query likes is discounted. [Q, G] -> [Q, G]."""
    return similarity * torch.softmax(similarity * temperature, dim=0)


def best_caption_scores(video_to_caption: torch.Tensor, caption_video: torch.Tensor, videos: int) -> torch.Tensor:
    """[V, C] video->caption scores -> [V, V]: each candidate video's best caption score."""
    index = caption_video[None, :].expand(len(video_to_caption), -1)
    empty = video_to_caption.new_full((len(video_to_caption), videos), float("-inf"))
    return empty.scatter_reduce(1, index, video_to_caption, "amax")


def retrieval_metrics(
    text: torch.Tensor, video: torch.Tensor, caption_video: torch.Tensor, *, dsl: bool = False,
    queries: torch.Tensor | None = None, video_to_text: str = "best-caption", bootstrap: int = 1000, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Both directions from L2-normalised embeddings: ``text`` [C, D] captions, ``video`` [V, D],
    ``caption_video`` [C] the index of each caption's video. Every caption is a text->video query;
    every video a video->text query, ranked by the ``video_to_text`` protocol (see the module).
    With ``dsl``, the dual-softmax numbers are added beside the raw ones. ``queries`` (bool [V])
    restricts the queries to those videos and their captions (e.g. the temporal subset); the
    galleries stay whole. With ``bootstrap`` > 0 resamples, every metric gets a 95% interval
    (``R@1_low``, ``R@1_high``, ...)."""
    if video_to_text not in VIDEO_TO_TEXT:
        raise ValueError(f"unknown video->text protocol {video_to_text!r}: choose one of {', '.join(VIDEO_TO_TEXT)}")
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
    identity = torch.eye(len(video), dtype=torch.bool, device=text.device)
    results = {}
    for suffix, (text_to_video, video_to_caption) in scored.items():
        if video_to_text == "best-caption":
            video_ranks = ranks(best_caption_scores(video_to_caption, caption_video, len(video)), identity)
        else:
            video_ranks = ranks(video_to_caption, positives.T)
        for direction, query_ranks in (("text_to_video", ranks(text_to_video, positives)[captions]),
                                       ("video_to_text", video_ranks[videos])):
            summary = summarise(query_ranks.cpu())
            if bootstrap:
                summary.update(bootstrap_intervals(query_ranks.cpu(), resamples=bootstrap, seed=seed))
            results[direction + suffix] = summary
    return results
