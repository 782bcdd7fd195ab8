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
import re
import socket
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .openclip import open_clip  # with our model names registered
from .weight_files import META, WEIGHTS, check_weights, is_pickle, names_a_file

__all__ = ["create_clip", "load_state_dict", "save_checkpoint"]


def save_checkpoint(folder: str | Path, clip: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / META).write_text(json.dumps({"format": "centerclip", **meta}, indent=2, sort_keys=True))
    return folder


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors, .pt, .pth or .bin file (or a checkpoint folder). A file that is
    not one of these is a ValueError naming the file and what is wrong with it."""
    path = check_weights(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"{path} is not a valid safetensors file ({error}): "
                             f"pass a file written by safetensors, or a .pt/.bin checkpoint") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(_unpickling_problem(path, str(error))) from None
    except (EOFError, RuntimeError) as error:  # truncated pickles; zip archives torch cannot read
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: it is damaged or in another format "
                         f"({str(error).split('.')[0][:120] or type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    # Checkpoints saved from DistributedDataParallel prefix every name with "module.".
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def _unpickling_problem(path: Path, message: str) -> str:
    """torch's weights-only refusal, told apart: a pickle of Python objects (refused on purpose)
    or a file that is no pickle at all (torch then suggests weights_only=False, which must not be
    followed: it would run whatever the file holds)."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found or is_pickle(path):
        return (f"refusing to load {path}: it holds Python objects, not only tensors" + (f" ({found[1]})" if found else "")
                + "; only tensor checkpoints are accepted: save the model's state_dict, or use safetensors")
    return (f"{path} is not a PyTorch checkpoint: it is damaged or in another format; "
            f"pass a .safetensors/.pt/.bin weights file or a checkpoint folder")


def load_weights(clip: torch.nn.Module, state: dict[str, torch.Tensor], model: str, source: str) -> None:
    """Load a state dict whose names and shapes must be the model's: weights of another model are a
    ValueError saying so, not torch's list of every mismatched tensor."""
    own = clip.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(name for name in set(own) & set(state) if own[name].shape != state[name].shape)
    if missing or unexpected or reshaped:
        example = (missing or unexpected or reshaped)[0]
        raise ValueError(f"{source} does not hold {model} weights ({len(missing)} tensors missing, {len(unexpected)} "
                         f"unexpected, {len(reshaped)} of another shape, e.g. {example}): pass the --model they belong to")
    clip.load_state_dict(state)


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
    if names_a_file(pretrained):
        state = load_state_dict(pretrained)  # a path that is no weights file is refused here, naming it
        # open_clip warns that the model is randomly initialised: true only until load_weights.
        def notice(record: logging.LogRecord) -> bool:
            return "Model initialized randomly" not in record.getMessage()

        logging.getLogger().addFilter(notice)
        try:
            clip = open_clip.create_model(model, load_weights=False)
        finally:
            logging.getLogger().removeFilter(notice)
        load_weights(clip, state, model, pretrained)
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
        raise ConnectionError(
            f"cannot download pretrained weights {model}/{pretrained}: no network. Either copy a Hugging Face cache "
            f"holding them into $HF_HOME (default ~/.cache/huggingface), or download the weights file from "
            f"{source} and pass its path: --model {model} --pretrained /path/to/open_clip_pytorch_model.bin{quick}")
    return open_clip.create_model(model, pretrained=pretrained)
