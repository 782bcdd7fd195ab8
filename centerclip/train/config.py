"""The settings of a fine-tuning run, apart from the training loop (centerclip.train.loop) so that
command lines can build their flags from it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

PRECISION_NAMES = ("fp32", "bf16", "fp16")  # centerclip.train.loop maps them to torch dtypes


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3  # parameters trained from scratch
    pretrained_lr: float = 1e-6  # CLIP weights that came pretrained: small steps keep what they know
    weight_decay: float = 0.2
    warmup_steps: int = 50
    grad_clip: float = 1.0
    precision: str = "auto"  # bf16 on CUDA, fp32 on CPU; or fp32 / bf16 / fp16
    grad_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISION_NAMES):
            raise ValueError(f"unknown precision {self.precision!r}: choose auto, {', '.join(PRECISION_NAMES)}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (the loss needs negatives)")
