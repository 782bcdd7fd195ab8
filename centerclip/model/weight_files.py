"""Weights on disk, read without torch: a centerclip checkpoint's file names and metadata, and
whether a file is the weights file it claims to be (safetensors, or one of torch's two formats),
so that a bad ``--pretrained`` is refused before any model or cluster starts."""

from __future__ import annotations

import json
import pickletools
import zipfile
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
META = "meta.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def checkpoint_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a centerclip checkpoint (its folder or its weights file), else None."""
    path = Path(path)
    meta = path / META if path.is_dir() else path.with_name(META)
    if not meta.is_file():
        return None
    values = json.loads(meta.read_text())
    return values if values.get("format") == "centerclip" else None


def names_a_file(pretrained: str) -> bool:
    """Whether ``--pretrained`` names weights on disk (a file or checkpoint folder, there or not)
    rather than an open_clip tag such as ``openai``."""
    return Path(pretrained).exists() or "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)


def check_weights(path: str | Path) -> Path:
    """The weights file behind ``path`` (a file, or a checkpoint folder's model.safetensors) if it
    looks like one, read without torch; else an error naming the file and what is wrong."""
    given = path
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--pretrained {given}: no such file or folder (weights are a .safetensors/.pt/.bin "
                                f"file, a centerclip checkpoint folder, or an open_clip tag such as openai)")
    if path.is_dir():
        if not (path / WEIGHTS).is_file():
            raise FileNotFoundError(f"{path} is a folder without {WEIGHTS}: pass a centerclip checkpoint folder "
                                    f"({WEIGHTS} + {META}) or a .safetensors/.pt/.bin weights file")
        path = path / WEIGHTS
    if path.stat().st_size == 0:
        raise ValueError(f"weights file {path} is empty: it was not saved completely, or is not a weights file")
    if path.suffix == ".safetensors":
        if not _is_safetensors(path):
            raise ValueError(f"{path} is not a valid safetensors file: pass a file written by safetensors, "
                             f"or a .pt/.bin checkpoint")
    elif not zipfile.is_zipfile(path) and not is_pickle(path):  # torch's two formats: a zip archive, or a legacy pickle
        raise ValueError(f"{path} is not a PyTorch checkpoint: it is damaged or in another format; "
                         f"pass a .safetensors/.pt/.bin weights file or a checkpoint folder")
    return path


def _is_safetensors(path: Path) -> bool:
    """An 8-byte little-endian header length, then that many bytes of a JSON object."""
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return False
        length = int.from_bytes(head, "little")
        if not 2 <= length <= min(100_000_000, path.stat().st_size - 8):
            return False
        try:
            return isinstance(json.loads(file.read(length)), dict)
        except ValueError:
            return False


def is_pickle(path: Path) -> bool:
    """Whether the file starts with a well-formed pickle, read opcode by opcode without running it."""
    with open(path, "rb") as file:
        try:
            for _ in pickletools.genops(file):
                pass
        except Exception:  # genops raises ValueError, EOFError, ... on what is not a pickle
            return False
    return True
