"""open_clip, with our model configs (the built-in centerclip-tiny and the tiny test model)
registered as open_clip model names. Import open_clip from here to use those names; import
centerclip.model.registry instead where torch must not load (decoding processes, the indexing driver)."""

import open_clip

from .registry import OUR_CONFIGS

open_clip.add_model_config(OUR_CONFIGS)

__all__ = ["open_clip"]
