"""Training-step peak memory and time with and without token clustering, same batch.

ViT-B-32 (random weights), a batch of videos x 12 frames at 224 px plus one caption each, one
AdamW step of the symmetric contrastive loss. Each schedule runs in a fresh subprocess: after a
warm-up step (which allocates gradients and optimizer state, the same for every schedule), the
peak memory of one more step is measured above what was resident before it: on CPU the kernel's
peak-RSS mark (reset first; glibc returns freed blocks of 64 KiB or more to the OS, so RSS follows
live tensors), on GPU torch's peak allocation. So the figure is the step's activations and
temporaries, the part token clustering can shrink. The last line prints the ratios.

    python benchmarks/bench_train_memory.py [--device cuda] [--batch 4] [--model ViT-B-32]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder

SCHEDULES = ("none", "kmedoids@6:4x49", "kmedoids@4:4x49")


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(model: str, schedule: str, batch: int, device: str, steps: int) -> dict:
    torch.manual_seed(0)
    encoder = VideoEncoder.create(EncoderConfig(model=model, schedule=Schedule.parse(schedule), frames=12)).to(device).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
    size = encoder.image_size[0]
    video = torch.randn(batch, 12, 3, size, size, device=device)
    captions = [f"a video of thing number {i}" for i in range(batch)]

    def step() -> None:
        video_embeddings, text_embeddings, scale = encoder(video, captions)
        encoder.contrastive_loss(text_embeddings, video_embeddings).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep gradient buffers: they are not what we measure
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = status_kib("VmRSS") * 1024
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else status_kib("VmHWM") * 1024) - before
    return {"schedule": schedule, "peak_bytes": peak, "seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="videos per step (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per schedule (median reported)")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), help="schedules, the first is the baseline")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.child, args.batch, args.device, args.steps)))
        return
    print(f"training step, {args.model}, {args.batch} videos x 12 frames, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")
    results = []
    for schedule in args.schedules:
        output = subprocess.run(
            [sys.executable, __file__, "--child", schedule, "--model", args.model, "--batch", str(args.batch),
             "--device", args.device, "--steps", str(args.steps)],
            check=True, capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    baseline = results[0]
    ratios = []
    for result in results:
        saved = 1 - result["peak_bytes"] / baseline["peak_bytes"]
        speedup = baseline["seconds"] / result["seconds"]
        print(f"{result['schedule']:20s} peak {result['peak_bytes'] / 2**20:8.0f} MiB   step {result['seconds']:6.2f} s   "
              f"memory {saved * 100:5.1f}% less   {speedup:4.2f}x faster")
        if result is not baseline:
            ratios.append(f"{result['schedule']} {saved * 100:.0f}% less memory, {speedup:.2f}x faster")
    print("ratios: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
