"""The encoding stage of indexing (see ``engine.py``): every video's clips in, one
embedding row per clip out. Its module imports neither LanceDB nor a video decoder, so an encoder
actor loads torch and the model and little else."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model.registry import EncoderConfig
from .batching import this_node
from .keys import moment_key


@dataclass(frozen=True)
class EncodeSettings:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # None: 4 on a CPU (as fast per clip as 16 there, and 75 MiB less memory in the default job's
    # encoder actor); 256 on a GPU, which wants large forwards (long videos bring 13+ clips each).
    clips_per_forward: int | None = None
    threads: int | None = None  # CPU threads of one actor; None leaves torch's default
    # On CPU, run ``threads`` single-threaded forwards side by side instead of one forward on
    # ``threads`` threads: torch's intra-op threads wait for each other at every operator, spinning,
    # so a decoder taking a core stalls them all; independent forwards just share the cores.
    parallel_forwards: bool = True
    # fp16 on a GPU; bfloat16 weights on a CPU that computes it natively (AVX512-BF16, AMX): about
    # half the CPU per video (bench_sizing.py), clustering distances still in float32. Not
    # autocast: it takes torch's attention off its fused path and cost ViT-B-32 40% more than
    # float32. False: float32 everywhere.
    reduced_precision: bool = True


def cpu_has_bfloat16(torch) -> bool:
    """Whether oneDNN runs bfloat16 natively here; elsewhere it would be emulated, and slower."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def without_triton() -> None:
    """Keep this process from importing Triton, the GPU kernel compiler of torch.compile: the
    encoders run their model eagerly and never compile it, yet torchvision's import of
    torch._dynamo imports Triton whenever it is installed, 70 MiB of an encoder actor's memory
    (benchmarks/RESULTS.md, issue 11). A None entry in sys.modules makes ``import triton`` fail,
    so torch takes it as absent. No effect where Triton is already loaded."""
    sys.modules.setdefault("triton", None)


class EncodeClips:
    """Encoder stage: the model is loaded once per actor (see EncodeSettings.reduced_precision). Emits one row per clip
    (id, video_id, kind, uri, start, end, vector, model, schedule, metadata, thumbnail, video_rows) plus the videos
    that failed, as rows with an error and no clip."""

    def __init__(self, *, settings: EncodeSettings):
        without_triton()
        import torch  # here, not at the top: the driver and the decoding processes never load torch

        from ..model.encoder import VideoEncoder

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.forwards = settings.threads if settings.parallel_forwards and settings.threads and self.device.type == "cpu" else 1
        if settings.threads:
            torch.set_num_threads(1 if self.forwards > 1 else settings.threads)
        self.pool = ThreadPoolExecutor(self.forwards, thread_name_prefix="forward") if self.forwards > 1 else None
        self.encoder = VideoEncoder.create(settings.encoder).eval().to(self.device)
        self.bfloat16 = settings.reduced_precision and self.device.type == "cpu" and cpu_has_bfloat16(torch)
        if settings.reduced_precision and (self.device.type == "cuda" or self.bfloat16):
            self.encoder = self.encoder.to(torch.float16 if self.device.type == "cuda" else torch.bfloat16)
        self.settings = settings
        self.node = this_node()
        self.model = self.encoder.model_name if self.encoder.pretrained is None else \
            f"{self.encoder.model_name}:{Path(self.encoder.pretrained).name}"

    def forward(self, frames: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():  # per thread: inference mode is thread-local
            chunk = self.torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            return self.encoder.encode_video(self.encoder.preprocess(chunk)).float().cpu().numpy()

    def embed(self, frames: np.ndarray) -> np.ndarray:
        if not len(frames):
            return np.zeros((0, self.encoder.embed_dim), np.float32)
        most = self.settings.clips_per_forward or (4 if self.device.type == "cpu" else 256)
        size = min(most, -(-len(frames) // self.forwards))  # equal shares for the threads
        chunks = [frames[begin:begin + size] for begin in range(0, len(frames), size)]
        return np.concatenate(list(self.pool.map(self.forward, chunks)) if self.pool else [self.forward(chunk) for chunk in chunks])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = list(batch["error"])
        stages = ["decode" if error else "" for error in errors]
        good = [i for i, error in enumerate(errors) if not error]
        vectors = np.zeros((0, self.encoder.embed_dim), np.float32)
        if good:
            try:
                vectors = self.embed(np.concatenate([batch["frames"][i] for i in good]))
            except (RuntimeError, ValueError) as failure:  # e.g. out of memory: these videos fail, the job goes on
                for i in good:
                    errors[i], stages[i] = f"cannot encode: {failure}", "encode"
                good, vectors = [], vectors[:0]
        rows: dict[str, list] = {name: [] for name in ("id", "video_id", "kind", "uri", "start", "end", "metadata", "thumbnail",
                                                       "error", "stage", "video_rows", "decoded_on")}

        def add(**values: Any) -> None:
            for name, value in values.items():
                rows[name].append(value)

        for i in good:
            key = batch["key"][i]
            for start, end, jpeg in zip(json.loads(batch["starts"][i]), json.loads(batch["ends"][i]), batch["thumbnails"][i]):
                add(id=key if start is None else moment_key(key, start, end), video_id=key,
                    kind="video" if start is None else "moment", uri=batch["uri"][i], start=start, end=end,
                    metadata=batch["metadata"][i], thumbnail=jpeg, error="", stage="", video_rows=len(batch["thumbnails"][i]),
                    decoded_on=batch["decoded_on"][i])
        failed = [i for i, error in enumerate(errors) if error]
        for i in failed:
            add(id=batch["key"][i], video_id=batch["key"][i], kind="video", uri=batch["uri"][i], start=None, end=None,
                metadata=batch["metadata"][i], thumbnail=b"", error=errors[i], stage=stages[i], video_rows=1,
                decoded_on=batch["decoded_on"][i])
        count = len(rows["id"])
        return {
            **{name: np.array(values, dtype=object) for name, values in rows.items() if name not in ("start", "end", "video_rows")},
            "video_rows": np.array(rows["video_rows"], dtype=np.int64),  # how many rows this row's video has (WholeVideos)
            # NaN stands for "whole video" here: Ray Data columns need one dtype; the writer maps it to null.
            "start": np.array([np.nan if v is None else v for v in rows["start"]], dtype=np.float64),
            "end": np.array([np.nan if v is None else v for v in rows["end"]], dtype=np.float64),
            "vector": np.concatenate([vectors, np.zeros((len(failed), vectors.shape[1]), np.float32)]).reshape(count, -1),
            "model": np.array([self.model] * count, dtype=object),
            "schedule": np.array([str(self.encoder.schedule)] * count, dtype=object),
            "encoded_on": np.array([self.node] * count, dtype=object),
        }
