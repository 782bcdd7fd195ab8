"""The token-reduction step, a pure function on batch-first token tensors.

Input: [V * F, 1 + N, D], the sequences of F frames (or segments) of V videos, CLS first.
Output: [V * S, 1 + K, D]: each run of F / S consecutive sequences becomes one sequence whose CLS
token is the mean of their CLS tokens and whose K patch tokens are chosen from all of theirs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from . import clustering
from .schedule import Schedule

# (patches [V*S, F/S, N, D], k) -> kept tokens [V*S, K, D]
Reducer = Callable[[torch.Tensor, int], torch.Tensor]


def _gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def _cluster_means(tokens: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    membership = F.one_hot(assign, k).to(tokens.dtype)  # [B, N, K]
    return (membership.mT @ tokens) / membership.sum(1)[..., None]


def _selecting(cluster: Callable[..., tuple[torch.Tensor, torch.Tensor]], keep: str,
               per_segment: Callable[[int], dict] = lambda frames: {}, **options) -> Reducer:
    """``per_segment(frames per segment)`` gives the options that depend on the segment's length."""
    def reduce(patches: torch.Tensor, k: int) -> torch.Tensor:
        tokens = patches.flatten(1, 2)  # the segment's frames side by side, in temporal order
        # Distances in float32 even where the model runs under autocast: bfloat16 rounding
        # would change which tokens are medoids.
        with torch.autocast(tokens.device.type, enabled=False):
            assign, centres = cluster(tokens, k, **options, **per_segment(patches.shape[1]))
        if keep == "mean":
            return _cluster_means(tokens, assign, k)
        return _gather(tokens, centres)

    return reduce


def _pool_frames(patches: torch.Tensor, k: int) -> torch.Tensor:
    return patches.mean(1)


def reducer_for(schedule: Schedule) -> Reducer:
    """The reduction a schedule asks for, with its options bound."""
    factories: dict[str, Callable[[], Reducer]] = {
        "kmedoids": lambda: _selecting(
            clustering.kmedoids, schedule.keep,
            distance=schedule.distance, p=schedule.p, max_iter=schedule.max_iter,
            self_distance=schedule.self_distance, sums=schedule.sums, chunk=schedule.chunk,
        ),
        "spectral": lambda: _selecting(
            clustering.spectral, schedule.keep,
            per_segment=lambda frames: {"knn": schedule.knn_per_frame * frames or schedule.knn},
            sigma=schedule.sigma, graph=schedule.graph, normalize=schedule.normalize,
            self_loops=schedule.self_loops, solver=schedule.solver, rows=schedule.rows,
            self_distance=schedule.self_distance, sums=schedule.sums, chunk=schedule.chunk,
            max_iter=schedule.max_iter,
        ),
        "sparse": lambda: _selecting(
            clustering.ALGORITHMS[schedule.sampling], schedule.keep,
            **({"seed": schedule.seed} if schedule.sampling == "random" else {}),
        ),
        "pooling": lambda: _pool_frames,
    }
    if schedule.algorithm not in factories:
        raise ValueError(f"schedule {schedule} does not reduce tokens")
    return factories[schedule.algorithm]()


def reduce_segments(x: torch.Tensor, *, videos: int, segments: int, tokens: int, reducer: Reducer) -> torch.Tensor:
    """[V * F, 1 + N, D] -> [V * S, 1 + K, D], see the module docstring."""
    sequences, length, width = x.shape
    if sequences % videos:
        raise ValueError(f"{sequences} sequences are not a whole number of frames for {videos} videos")
    frames = sequences // videos
    if frames % segments:
        raise ValueError(f"{segments} segments do not divide the {frames} frames of each video")
    # Segment-major, as the published code orders them (segment 0 of every video, then segment 1,
    # ...): the clustering takes its batch in chunks that share a shift and a stopping rule, so the
    # same chunks give the published rounding.
    grouped = x.reshape(videos, segments, frames // segments, length, width).transpose(0, 1)
    grouped = grouped.reshape(segments * videos, frames // segments, length, width)
    cls = grouped[:, :, 0].mean(1, keepdim=True)
    kept = reducer(grouped[:, :, 1:], tokens)
    reduced = torch.cat([cls, kept], dim=1)
    return reduced.reshape(segments, videos, 1 + tokens, width).transpose(0, 1).reshape(videos * segments, 1 + tokens, width)
