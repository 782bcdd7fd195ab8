"""centerclip: token clustering for efficient text-video retrieval.

The public names load on first use (PEP 562), so ``import centerclip.video`` in a decoding
process does not import torch and open_clip: that is 300-450 MB of private memory per process.
"""

from importlib import import_module

_PUBLIC = {
    "EncoderConfig": "models", "Schedule": "schedule", "Stage": "schedule", "VideoEncoder": "encoder",
    "apply": "patch", "remove": "patch", "kmedoids": "clustering", "spectral": "clustering",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:  # AttributeError also lets `from centerclip import video` import the submodule
        raise AttributeError(f"module 'centerclip' has no attribute {name!r}")
    return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
