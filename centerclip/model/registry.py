"""What an encoder is, without building it: its configuration, the built-in model's location,
and the shape of a model (embedding size, input size, frames) read from
open_clip's JSON model configs.

Nothing here imports torch or open_clip (300-450 MB of private memory per process), so an
indexing driver that has nothing to encode, or that only schedules encoder actors, never loads a
model or a deep-learning runtime.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schedule import Schedule
from .weight_files import WEIGHTS, check_weights, checkpoint_meta, names_a_file

DEFAULT_MODEL = "centerclip-tiny"
BUILTIN = Path(__file__).parent / "weights" / DEFAULT_MODEL
OUR_CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class EncoderConfig:
    """Which model to build. Fields left None come from a centerclip checkpoint's metadata when
    ``pretrained`` is one, else from the defaults: the built-in model, no reduction, the model's frames (default_frames)."""

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

    def resolved(self) -> EncoderConfig:
        """Every field filled in, as ``VideoEncoder.create`` builds it: the built-in weights when
        neither model nor weights are given, then a checkpoint's metadata, then the defaults."""
        pretrained = self.pretrained
        if self.model is None and pretrained is None and (BUILTIN / WEIGHTS).is_file():
            pretrained = str(BUILTIN)
        meta = (checkpoint_meta(pretrained) if pretrained else None) or {}
        model = self.model or meta.get("model") or DEFAULT_MODEL
        if meta and meta["model"] != model:
            raise ValueError(f"checkpoint {pretrained} holds a {meta['model']} model, not {model}")
        return EncoderConfig(model=model, pretrained=pretrained,
                             schedule=self.schedule or Schedule.parse(meta.get("schedule", "none")),
                             frames=self.frames or meta.get("frames") or default_frames(model))


def default_frames(model: str) -> int:
    """Frames per video when neither the config nor a checkpoint says: the built-in model's own for
    its architecture (it was trained on 8), else 12 (the paper's setting for CLIP models)."""
    if model == DEFAULT_MODEL:
        return (checkpoint_meta(BUILTIN) or {}).get("frames", 12)
    return 12


@dataclass(frozen=True)
class ModelShape:
    embed_dim: int
    image_size: int
    layers: int | None = None  # vision transformer blocks (None: not a plain ViT config)
    tokens_per_frame: int | None = None  # patch tokens of one frame


def model_shape(model: str) -> ModelShape | None:
    """Embedding size and square input size of an open_clip model name (ours or open_clip's),
    from its JSON config; None where there is no local JSON (e.g. ``hf-hub:`` models) or the input
    is not square: then only building the model tells."""
    folders = [OUR_CONFIGS]
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it (torch)
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(location) / "model_configs" for location in spec.submodule_search_locations]
    for folder in folders:
        path = folder / f"{model}.json"
        if path.is_file():
            config = json.loads(path.read_text())
            size = config.get("vision_cfg", {}).get("image_size", 224)
            if isinstance(size, (list, tuple)):
                if size[0] != size[1]:
                    return None
                size = size[0]
            vision = config.get("vision_cfg", {})
            patch = vision.get("patch_size")
            layers = vision.get("layers") if isinstance(vision.get("layers"), int) else None
            return ModelShape(int(config["embed_dim"]), int(size), layers,
                              (int(size) // patch) ** 2 if isinstance(patch, int) else None)
    return None


def check_encoder(config: EncoderConfig) -> ModelShape | None:
    """Check a resolved config without building the model (no torch): the weights file is one, the
    schedule fits the model. Returns the model's shape, or None when only building it can tell
    (a model without a local JSON config, which building then checks)."""
    if config.pretrained and names_a_file(config.pretrained):
        check_weights(config.pretrained)
    shape = model_shape(config.model)
    if shape is not None and shape.layers is not None:
        config.schedule.validate(layers=shape.layers, frames=config.frames, tokens_per_frame=shape.tokens_per_frame)
    return shape
