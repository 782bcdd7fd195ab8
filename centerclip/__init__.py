"""centerclip: token clustering for efficient text-video retrieval."""

from pathlib import Path

import open_clip

# Our model configs (the built-in default and the tiny test model) become open_clip model names.
open_clip.add_model_config(Path(__file__).parent / "model_configs")

from .clustering import kmedoids, spectral  # noqa: E402
from .encoder import EncoderConfig, VideoEncoder  # noqa: E402
from .patch import apply, remove  # noqa: E402
from .schedule import Schedule, Stage  # noqa: E402

__all__ = ["EncoderConfig", "Schedule", "Stage", "VideoEncoder", "apply", "remove", "kmedoids", "spectral"]
