"""What one indexing run does: its inputs, store, model, pools and moments, as one frozen config
that the command line builds and every stage reads. Light: no torch, Ray or LanceDB."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.registry import EncoderConfig
from ..model.schedule import Schedule


@dataclass(frozen=True)
class MomentConfig:
    """Moments: videos longer than ``min_duration`` seconds also get one row per window."""

    length: float = 10.0
    stride: float = 10.0
    min_duration: float = 20.0


@dataclass(frozen=True)
class IndexJob:
    inputs: tuple[str, ...] = ()  # empty: a synthetic sample set generated under `cache`
    db: str = "centerclip.lancedb"
    table: str = "videos"
    model: str | None = None
    pretrained: str | None = None
    schedule: str | None = None  # default: the model's own
    frames: int | None = None
    # Videos per decoder call, and per encoder call up to Ray Data's block size (128 MiB of frames;
    # long videos go to the encoder in smaller calls). More amortises Ray Data's per-call cost
    # (bench_index.py: 4 -> 16 videos saved 4-10% of the CPU per video; 16 -> 32 indexed about 10% faster).
    batch_size: int = 32
    # Pools (pools.py): None sizes them from the cluster's nodes and the node types its autoscaler can add.
    decoders: int | None = None  # None: 1 and up, over the CPUs the encoders leave
    decoder_cpus: float | None = None  # None: 0.5, at most half the smallest node
    encoders: int | None = None  # None: 1 and up, one per GPU; on CPUs, one per node or what fits beside a decoder
    encoder_cpus: float | None = None  # None: 1 with GPUs; on CPUs, what a decoder leaves on the smallest node (at most 8)
    gpus_per_encoder: float = 0.0  # e.g. 1 on a GPU cluster
    # Stop, saying why, when nothing is indexed for this long and no node joins or leaves (0: wait
    # forever): Ray waits without end for actors that no node can host.
    stall_minutes: float = 15.0
    moments: MomentConfig = field(default_factory=MomentConfig)
    sample_videos: int = 40
    cache: str = ".cache/centerclip"
    query: str | None = None  # a search to show when indexing is done
    prune: bool = False  # remove rows and errors of files no longer under the listed inputs
    retry_errors: bool = False  # try again the inputs that failed and have not changed
    fp32: bool = False  # encode in float32 (default: EncodeSettings.reduced_precision)
    decode: str = ""  # decoder options (SamplingConfig.parse_options); "": SamplingConfig's defaults

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model=self.model, pretrained=self.pretrained, frames=self.frames,
                             schedule=Schedule.parse(self.schedule) if self.schedule else None)
