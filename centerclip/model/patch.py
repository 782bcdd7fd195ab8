"""Token clustering on an open_clip VisionTransformer, by swapping block classes at run time.

``apply(model, schedule)`` turns each block after which the schedule reduces into a subclass of
its own class whose forward runs the original block and then reduces the tokens; ``remove(model)``
turns them back. Nothing of CLIP's attention is copied, the block count and call signature stay,
and the CLS token stays at index 0, so open_clip's own pooling, ln_post and projection run as
usual on the reduced sequences and return one embedding per segment.

The blocks need to know how many videos the flattened frame batch holds; the caller sets it with
``set_videos`` before each forward (VideoEncoder does), per thread, so that forwards of one model
may run in parallel threads (the CPU indexer does).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from torch import nn

from .reduce import Reducer, reduce_segments, reducer_for
from .schedule import Schedule, Stage

_STATE = "_centerclip_state"
_ORIGINAL_CLASS = "_centerclip_original_class"
_STAGE = "_centerclip_stage"


@dataclass
class _PatchState:
    schedule: Schedule
    reducer: Reducer
    batch_first: bool
    videos_by_thread: dict[int, int] = field(default_factory=dict)  # a dict, not threading.local: it deep-copies

    @property
    def videos(self) -> int | None:
        return self.videos_by_thread.get(threading.get_ident())


class _ReduceAfterBlock:
    """Mixin placed before the block's own class: run the block, then reduce its output."""

    def forward(self, *args, **kwargs):
        x = super().forward(*args, **kwargs)
        stage: Stage = getattr(self, _STAGE)
        state: _PatchState = getattr(self, _STATE)
        if state.videos is None:
            raise RuntimeError("a token-clustering patch is applied: call centerclip.model.patch.set_videos(visual, n) "
                               "with the number of videos in the batch before the forward (VideoEncoder does)")
        if not state.batch_first:
            x = x.transpose(0, 1)
        x = reduce_segments(x, videos=state.videos, segments=stage.segments, tokens=stage.tokens,
                            reducer=state.reducer)
        return x if state.batch_first else x.transpose(0, 1).contiguous()


_CLASSES: dict[type, type] = {}


def _reducing_class(block_class: type) -> type:
    if block_class not in _CLASSES:
        _CLASSES[block_class] = type(f"Reducing{block_class.__name__}", (_ReduceAfterBlock, block_class), {})
    return _CLASSES[block_class]


def vision_tower(model: nn.Module) -> nn.Module:
    """The VisionTransformer of an open_clip CLIP model, or the model itself if it is one."""
    visual = getattr(model, "visual", model)
    if not hasattr(getattr(visual, "transformer", None), "resblocks"):
        raise TypeError(f"{type(visual).__name__} is not an open_clip VisionTransformer (no transformer.resblocks)")
    return visual


def tokens_per_frame(visual: nn.Module) -> int:
    """Patch tokens per frame, read from the model's positional embedding (CLS excluded)."""
    return visual.positional_embedding.shape[0] - 1


def apply(model: nn.Module, schedule: Schedule) -> nn.Module:
    """Patch ``model`` (a CLIP model or its VisionTransformer) in place to reduce tokens as
    ``schedule`` says; applying again replaces the previous patch. Returns the vision tower."""
    visual = vision_tower(model)
    remove(visual)
    if not schedule.reduces:
        return visual
    blocks = visual.transformer.resblocks
    # Frames per video are only known per call: VideoEncoder validates those on every forward.
    schedule.validate(layers=len(blocks))
    # open_clip < 2.23 ran its transformer sequence-first (LND) and had no batch_first attribute.
    state = _PatchState(schedule, reducer_for(schedule), getattr(visual.transformer, "batch_first", False))
    setattr(visual, _STATE, state)
    for stage in schedule.stages:
        block = blocks[stage.block - 1]
        setattr(block, _ORIGINAL_CLASS, block.__class__)
        setattr(block, _STAGE, stage)
        setattr(block, _STATE, state)
        block.__class__ = _reducing_class(block.__class__)
    return visual


def remove(model: nn.Module) -> nn.Module:
    """Undo ``apply``: every block gets its original class back. A no-op on an unpatched model."""
    visual = vision_tower(model)
    for block in visual.transformer.resblocks:
        if hasattr(block, _ORIGINAL_CLASS):
            block.__class__ = getattr(block, _ORIGINAL_CLASS)
            for name in (_ORIGINAL_CLASS, _STAGE, _STATE):
                delattr(block, name)
    if hasattr(visual, _STATE):
        delattr(visual, _STATE)
    return visual


def set_videos(model: nn.Module, videos: int) -> None:
    """Tell the patched blocks how many videos the next forward's frame batch holds."""
    state = getattr(vision_tower(model), _STATE, None)
    if state is not None:
        state.videos_by_thread[threading.get_ident()] = videos
