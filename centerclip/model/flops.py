"""Analytical FLOPs and token counts of the vision tower per video, for a model and a schedule.

Counts follow torch.utils.flop_counter's convention (2 FLOPs per multiply-add; matmuls,
convolutions and attention only; norms, activations and softmax are free) so the two can be
compared. The clustering itself is not counted: its iteration count depends on the data, and at
the paper's settings it is well under 1% of the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from . import patch
from .openclip import open_clip  # with our model names registered
from .schedule import Schedule


@dataclass(frozen=True)
class VisionShape:
    """What FLOPs depend on in an open_clip VisionTransformer."""

    width: int
    layers: int
    mlp_width: int
    patch_size: int
    tokens_per_frame: int
    output_dim: int

    @classmethod
    def of_model(cls, model: nn.Module) -> VisionShape:
        visual = patch.vision_tower(model)
        block = visual.transformer.resblocks[0]
        return cls(
            width=visual.transformer.width,
            layers=len(visual.transformer.resblocks),
            mlp_width=block.mlp.c_fc.out_features,
            patch_size=visual.conv1.kernel_size[0],
            tokens_per_frame=patch.tokens_per_frame(visual),
            output_dim=visual.output_dim,
        )

    @classmethod
    def of_config(cls, name: str) -> VisionShape:
        """From an open_clip model name, without building the model."""
        config = open_clip.get_model_config(name)
        if config is None:
            raise ValueError(f"unknown open_clip model {name!r}")
        vision = {**vars(open_clip.model.CLIPVisionCfg()), **config["vision_cfg"]}
        grid = vision["image_size"] // vision["patch_size"]
        return cls(
            width=vision["width"],
            layers=vision["layers"],
            mlp_width=int(vision["width"] * vision["mlp_ratio"]),
            patch_size=vision["patch_size"],
            tokens_per_frame=grid * grid,
            output_dim=config["embed_dim"],
        )


@dataclass(frozen=True)
class VideoCost:
    flops: int
    tokens: int  # token-block passes: sum over blocks of the tokens each block processes

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def _block_flops(sequences: int, length: int, shape: VisionShape) -> int:
    w = shape.width
    projections = 2 * length * w * 4 * w  # q, k, v and output projections
    attention = 2 * 2 * length * length * w  # scores and weighted sum over all heads
    mlp = 2 * 2 * length * w * shape.mlp_width
    return sequences * (projections + attention + mlp)


def video_cost(shape: VisionShape, schedule: Schedule, frames: int) -> VideoCost:
    """FLOPs and tokens of one video of ``frames`` frames through the vision tower."""
    schedule.validate(layers=shape.layers, frames=frames, tokens_per_frame=shape.tokens_per_frame)
    stages = {stage.block: stage for stage in schedule.stages}
    sequences, length = frames, 1 + shape.tokens_per_frame
    flops = frames * 2 * shape.tokens_per_frame * 3 * shape.patch_size**2 * shape.width  # patch embedding
    tokens = 0
    for block in range(1, shape.layers + 1):
        flops += _block_flops(sequences, length, shape)
        tokens += sequences * length
        if block in stages:
            sequences, length = stages[block].segments, 1 + stages[block].tokens
    flops += sequences * 2 * shape.width * shape.output_dim  # projection of each segment's CLS
    return VideoCost(flops=flops, tokens=tokens)


def counted_flops(run) -> int:
    """FLOPs that torch.utils.flop_counter sees while ``run()`` executes, with attention made
    visible: the MultiheadAttention fast path and fused SDPA kernels are hidden from the counter,
    so both are switched to their plain-matmul forms for the duration."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()
