"""centerclip: token clustering for efficient text-video retrieval.

The package is split by concern into wings, each importing only those listed before it:

    datasets/  one adapter per benchmark, and the synthetic generator
    media/     decoding videos into sampled frames, moments, thumbnails (no torch)
    model/     the clustered CLIP video encoder: schedules, clustering, the open_clip patch, weights
    index/     the indexing engine: listing, planning against the LanceDB store, Ray Data stages
    train/     fine-tuning, evaluation and retrieval metrics
    search/    the searcher over a store, and the web service
    commands/  the command lines (pipelines/*.py run them)

Public names load on first use (PEP 562), here and in every wing, so ``import
centerclip.media.decoding`` in a decoding process does not import torch and open_clip: that is
300-450 MB of private memory per process.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for ``names`` (public name -> its module,
    relative to the package), each imported when first asked for."""

    def __getattr__(name: str):
        if name not in names:  # AttributeError also lets `from package import module` import the submodule
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f".{names[name]}", package), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(import_module(package))) | set(names))

    return __getattr__, __dir__


_PUBLIC = {
    "EncoderConfig": "model.registry", "Schedule": "model.schedule", "Stage": "model.schedule",
    "VideoEncoder": "model.encoder", "apply": "model.patch", "remove": "model.patch",
    "kmedoids": "model.clustering", "spectral": "model.clustering",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
