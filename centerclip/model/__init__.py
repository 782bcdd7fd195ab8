"""The clustered CLIP video encoder: a schedule says where and how the vision transformer clusters
its tokens, the patch applies it to an open_clip model, the encoder embeds videos and text.
Start reading at ``encoder.py``, then ``patch.py`` and ``clustering.py``."""

from .. import lazy_exports

_PUBLIC = {
    "EncoderConfig": "registry", "DEFAULT_MODEL": "registry", "check_encoder": "registry", "model_shape": "registry",
    "Schedule": "schedule", "Stage": "schedule", "VideoEncoder": "encoder", "apply": "patch", "remove": "patch",
    "kmedoids": "clustering", "spectral": "clustering", "save_checkpoint": "checkpoint", "load_state_dict": "checkpoint",
    "VisionShape": "flops", "video_cost": "flops",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
