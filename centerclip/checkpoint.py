"""Model weights in and out, safely.

Weights are read with safetensors or ``torch.load(weights_only=True)``, never by unpickling
arbitrary objects. A centerclip checkpoint is a folder holding ``model.safetensors`` and
``meta.json`` (open_clip model name, schedule, frames, step, metrics), so loading it restores the
whole encoder configuration.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file, save_file

from .models import BUILTIN, META, OUR_CONFIGS, WEIGHTS, checkpoint_meta

__all__ = ["BUILTIN", "META", "WEIGHTS", "checkpoint_meta", "create_clip", "load_state_dict", "save_checkpoint"]

# Our model configs (the built-in default and the tiny test model) become open_clip model names.
open_clip.add_model_config(OUR_CONFIGS)


def save_checkpoint(folder: str | Path, clip: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / META).write_text(json.dumps({"format": "centerclip", **meta}, indent=2, sort_keys=True))
    return folder


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors, .pt, .pth or .bin file (or a checkpoint folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"refusing to load {path}: it holds Python objects, not only tensors; "
                         f"only tensor checkpoints are accepted ({str(error).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    # Checkpoints saved from DistributedDataParallel prefix every name with "module.".
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


class _Drop(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_hub_file(hub_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo = hub_id.rstrip("/")
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return cached
    return None


def create_clip(model: str, pretrained: str | None) -> torch.nn.Module:
    """An open_clip model with weights from an open_clip tag, a weights file, or none."""
    if open_clip.get_model_config(model) is None:
        raise ValueError(f"unknown model {model!r}: use an open_clip model name ({', '.join(open_clip.list_models()[:6])}, ...) "
                         f"or centerclip-tiny")
    if pretrained is None:
        return open_clip.create_model(model)
    if Path(pretrained).exists():
        # open_clip warns that the model is randomly initialised: true only until the next line.
        notice = _Drop("Model initialized randomly")
        logging.getLogger().addFilter(notice)
        try:
            clip = open_clip.create_model(model, load_weights=False)
        finally:
            logging.getLogger().removeFilter(notice)
        clip.load_state_dict(load_state_dict(pretrained))
        return clip
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag:
        raise ValueError(f"{pretrained!r} is neither a weights file nor a pretrained tag of {model}; "
                         f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'}")
    hub_id = tag.get("hf_hub", "")
    cached = _cached_hub_file(hub_id) if hub_id else None
    if cached:
        return open_clip.create_model(model, pretrained=cached, force_quick_gelu=tag.get("quick_gelu", False))
    if not _hub_reachable():
        source = f"https://huggingface.co/{hub_id.rstrip('/')}" if hub_id else tag.get("url", "its release page")
        quick = " (these weights need QuickGELU: use the model name with -quickgelu)" if tag.get("quick_gelu") else ""
        raise RuntimeError(
            f"cannot download pretrained weights {model}/{pretrained}: no network. Either copy a Hugging Face cache "
            f"holding them into $HF_HOME (default ~/.cache/huggingface), or download the weights file from "
            f"{source} and pass its path: --model {model} --pretrained /path/to/open_clip_pytorch_model.bin{quick}")
    return open_clip.create_model(model, pretrained=pretrained)
