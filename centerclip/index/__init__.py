"""The indexing engine: list the inputs, plan them against the LanceDB store, decode (CPU actors)
and encode (actor pool, GPU when present) with Ray Data, and write whole videos' rows; failures
go to the errors table. Start reading at ``engine.py``."""

from .. import lazy_exports

_PUBLIC = {
    "IndexJob": "job", "MomentConfig": "job", "run": "engine", "plan": "engine", "list_errors": "engine",
    "Store": "store", "list_inputs": "listing", "pools": "pools", "DecodeVideos": "decode_stage",
    "EncodeClips": "encode_stage", "EncodeSettings": "encode_stage",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
