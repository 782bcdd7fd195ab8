"""What an encoder is, without building it: its configuration, the built-in model's location,
checkpoint metadata, and the shape of a model (embedding size, input size, frames) read from
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

DEFAULT_MODEL = "centerclip-tiny"
WEIGHTS = "model.safetensors"
META = "meta.json"
BUILTIN = Path(__file__).parent / "weights" / DEFAULT_MODEL
OUR_CONFIGS = Path(__file__).parent / "model_configs"


@dataclass(frozen=True)
class EncoderConfig:
    """Which model to build. Fields left None come from a centerclip checkpoint's metadata when
    ``pretrained`` is one, else from the defaults: the built-in model, no reduction, 12 frames."""

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
                             frames=self.frames or meta.get("frames", 12))


@dataclass(frozen=True)
class ModelShape:
    embed_dim: int
    image_size: int


def checkpoint_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a centerclip checkpoint (its folder or its weights file), else None."""
    path = Path(path)
    meta = path / META if path.is_dir() else path.with_name(META)
    if not meta.is_file():
        return None
    values = json.loads(meta.read_text())
    return values if values.get("format") == "centerclip" else None


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
            return ModelShape(int(config["embed_dim"]), int(size))
    return None
