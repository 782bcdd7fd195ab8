"""centerclip: token clustering for efficient text-video retrieval.

The public names load their modules on first use, so that command lines can parse their arguments
(and answer --help) without importing torch.
"""

from importlib import import_module

_EXPORTS = {"EncoderConfig": "encoder", "VideoEncoder": "encoder", "Schedule": "schedule", "Stage": "schedule",
            "apply": "patch", "remove": "patch", "kmedoids": "clustering", "spectral": "clustering"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
