"""Videos into frames: probing and decoding (decord, PyAV as fallback) in an isolated worker
process, sampling a clip's frames and a long video's moments, thumbnails, and benchmark splits
decoded once. Nothing here imports torch unless a name that needs it is used."""

from .. import lazy_exports

_PUBLIC = {
    "SamplingConfig": "decoding", "Decoder": "decoding", "probe": "decoding", "sample_clip": "decoding",
    "sample_moments": "decoding", "sample_video": "decoding", "VideoDecodeError": "sources",
    "path_from_uri": "sources", "uri_from_path": "sources", "thumbnail": "thumbnails",
    "FrameSet": "frames", "benchmark_split": "frames",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
