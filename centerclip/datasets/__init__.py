"""Benchmark adapters: every one returns a pyarrow table with :data:`SCHEMA`, one row per video.

``load("msrvtt", root, split="test")`` picks the adapter by name; the adapters themselves take
the same ``root`` and ``split`` plus keyword options (``videos_dir``, and file names for MSR-VTT).
The synthetic benchmark's generator, ``centerclip.datasets.synthetic.ensure_synthetic``, is not
imported here: it is also a ``python -m`` script, which must not be imported before it runs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .activitynet import activitynet
from .common import SCHEMA, AnnotationError
from .didemo import didemo
from .lsmdc import lsmdc
from .msrvtt import msrvtt, synthetic
from .msvd import load_raw_captions, msvd

LOADERS = {
    "msrvtt": msrvtt,
    "msvd": msvd,
    "lsmdc": lsmdc,
    "activitynet": activitynet,
    "didemo": didemo,
    "synthetic": synthetic,
}


def load(benchmark: str, root: str | Path, split: str = "test", **options) -> pa.Table:
    """The ``split`` of ``benchmark`` (a key of LOADERS) whose annotation files are in ``root``."""
    if benchmark not in LOADERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[benchmark](root, split, **options)


__all__ = [
    "LOADERS", "SCHEMA", "AnnotationError", "activitynet", "didemo",
    "load", "load_raw_captions", "lsmdc", "msrvtt", "msvd", "synthetic",
]  # fmt: skip
