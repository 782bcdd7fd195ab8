"""Encoder forward with token clustering against no reduction, same model, same video, same run.

Random weights, one video of 12 frames at 224 px, inference mode. Timings alternate between the
schedules so machine noise hits both alike; the median of the repeats is reported, with the FLOPs
bound (analytical FLOPs ratio) beside each measured speed-up. The last line prints the ratios.

    python benchmarks/bench_encoder.py [--device cuda] [--repeats 5] [--models ViT-B-32 ViT-B-16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.model.flops import VisionShape, video_cost

PAPER_SCHEDULES = {"ViT-B-32": "kmedoids@6:4x49", "ViT-B-16": "kmedoids@6:4x160"}
FRAMES = 12


def time_forward(encoder: VideoEncoder, video: torch.Tensor, device: str) -> float:
    start = time.perf_counter()
    encoder.encode_video(video)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def compare(model: str, schedule: Schedule, device: str, repeats: int) -> tuple[float, float, float, float]:
    torch.manual_seed(0)
    encoder = VideoEncoder.create(EncoderConfig(model=model)).eval().to(device)
    if device.startswith("cuda"):
        encoder = encoder.half()
    video = torch.randn(1, FRAMES, 3, 224, 224, device=device)
    shape = VisionShape.of_model(encoder.clip)
    flops_bound = video_cost(shape, Schedule(), FRAMES).flops / video_cost(shape, schedule, FRAMES).flops
    times = {"none": [], "reduced": []}
    for _ in range(repeats + 1):  # the first round warms up
        for name, candidate in (("none", Schedule()), ("reduced", schedule)):
            encoder.set_schedule(candidate)
            times[name].append(time_forward(encoder, video, device))
    full, reduced = (statistics.median(times[name][1:]) for name in ("none", "reduced"))
    return full, reduced, full / reduced, flops_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 on cuda)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per schedule (median reported)")
    parser.add_argument("--models", nargs="+", default=list(PAPER_SCHEDULES), choices=list(PAPER_SCHEDULES))
    args = parser.parse_args()
    print(f"encoder forward, 1 video x {FRAMES} frames, device={args.device}, torch threads={torch.get_num_threads()}")
    ratios = []
    for model in args.models:
        schedule = Schedule.parse(PAPER_SCHEDULES[model])
        full, reduced, speedup, bound = compare(model, schedule, args.device, args.repeats)
        ratios.append(f"{model} {speedup:.2f}x")
        print(f"{model}: none {full * 1e3:7.1f} ms   {schedule} {reduced * 1e3:7.1f} ms   "
              f"speed-up {speedup:.2f}x (FLOPs bound {bound:.2f}x)")
    print("ratios: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
