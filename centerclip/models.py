"""open_clip, with our model configs (the built-in centerclip-tiny and the tiny test model)
registered as open_clip model names. Import open_clip from here to use those names."""

from pathlib import Path

import open_clip

open_clip.add_model_config(Path(__file__).parent / "model_configs")

__all__ = ["open_clip"]
