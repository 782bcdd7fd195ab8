"""The paper's central experiment on our benchmark: fine-tune with token clustering and without.

From the same start (the built-in centerclip-tiny weights) and for the same steps, batches and
captions (everything random in training is a function of (seed, step)), the model is fine-tuned
once per schedule on the synthetic train split it was trained on (1,400 videos, 8 frames), then
each result is evaluated with its own schedule on the 2,500-video synthetic test split, with 95%
bootstrap intervals over queries; the start is evaluated the same way. Each arm trains in its own
process, so its figures are its own: time per step (median, after the first step) and peak
training memory above the resident set once the model and the (in-memory) training frames are
loaded: activations, gradients, optimizer state and temporaries (on CPU the kernel's peak-RSS mark
with glibc returning freed blocks; on GPU torch's peak allocation).

    python benchmarks/finetune_clustering.py [--steps 100] [--lr 1e-4] [--parallel] [--out runs/finetune-clustering]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: centerclip/ is at the root

from centerclip import EncoderConfig, Schedule, VideoEncoder  # noqa: E402
from centerclip.model.checkpoint import save_checkpoint  # noqa: E402
from centerclip.datasets.msrvtt import TRAINING_VIDEOS  # noqa: E402
from centerclip.train.evaluation import evaluate  # noqa: E402
from centerclip.media.frames import FrameSet, benchmark_split  # noqa: E402
from centerclip.train.loop import TrainConfig, train  # noqa: E402
from centerclip.media.decoding import SamplingConfig  # noqa: E402
from centerclip.train.benchmark import EvaluateJob, load_split  # noqa: E402

SCHEDULES = ("none", "kmedoids@3:4x49")
FRAMES = 8


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak(device: torch.device) -> int:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_kib("VmRSS") * 1024


def peak_above(before: int, device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - before
    return status_kib("VmHWM") * 1024 - before


def train_arm(schedule: str, frames_folder: str, config: TrainConfig, out: Path) -> dict:
    """One arm, in this process: fine-tune, save the weights, return time per step and peak memory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    encoder = VideoEncoder.create(EncoderConfig(schedule=Schedule.parse(schedule), frames=FRAMES)).to(device)
    stored = FrameSet.load(frames_folder)
    data = FrameSet(np.ascontiguousarray(stored.frames), stored.captions, stored.video_ids, stored.temporal)
    stamps = [time.perf_counter()]
    losses = []

    def record(metrics: dict, _folder) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        losses.append(metrics["loss"])
        if metrics["step"] % 10 == 0:
            print(f"{schedule}: step {metrics['step']}/{config.steps} loss {metrics['loss']:.3f} "
                  f"({stamps[-1] - stamps[-2]:.2f} s/step)", file=sys.stderr, flush=True)

    before = reset_peak(device)
    train(encoder, data, replace(config, log_every=1), report=record)
    peak = peak_above(before, device)
    folder = save_checkpoint(out / schedule.replace("@", "_").replace(":", "-"), encoder.clip,
                             {"model": encoder.model_name, "schedule": schedule, "frames": FRAMES})
    step_seconds = np.diff(stamps)[1:]  # the first step allocates gradients and optimizer state
    return {"schedule": schedule, "checkpoint": str(folder), "peak_training_bytes": peak,
            "seconds_per_step": float(statistics.median(step_seconds)), "first_loss": losses[0],
            "last_loss": float(np.mean(losses[-10:])), "wall_seconds": stamps[-1] - stamps[0]}


def train_arms(frames_folder: str, args: argparse.Namespace) -> list[dict]:
    """Every arm in its own process; with --parallel all at once (on a machine shared with other
    work they then see the same load, and the experiment gets a fairer share of it)."""
    def start(schedule: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, __file__, "--child", schedule, frames_folder, "--steps", str(args.steps), "--lr",
             str(args.lr), "--batch-size", str(args.batch_size), "--out", str(args.out)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        )

    def result(process: subprocess.Popen) -> dict:
        output, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{' '.join(process.args[2:4])} failed with exit code {process.returncode}")
        return json.loads(output.strip().splitlines()[-1])

    if args.parallel:
        return [result(process) for process in [start(schedule) for schedule in SCHEDULES]]
    return [result(start(schedule)) for schedule in SCHEDULES]


def scored(pretrained: str | None, schedule: str, job: EvaluateJob) -> dict:
    encoder = VideoEncoder.create(EncoderConfig(pretrained=pretrained, schedule=Schedule.parse(schedule), frames=FRAMES))
    data, _ = load_split(job, encoder)
    return evaluate(encoder, data, video_to_text=job.video_to_text, bootstrap=job.bootstrap)["all"]


def interval(values: dict, name: str) -> str:
    return f"{values[name]:.1f} [{values[name + '_low']:.1f}, {values[name + '_high']:.1f}]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps per arm (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="videos per step (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-clustering"), help="weights and results.json")
    parser.add_argument("--cache", default=".cache/centerclip", help="generated data and decoded frames")
    parser.add_argument("--parallel", action="store_true", help="train the arms at the same time, each in its process")
    parser.add_argument("--child", nargs=2, metavar=("SCHEDULE", "FRAMES"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=max(1, args.steps // 10))
    if args.child:
        print(json.dumps(train_arm(*args.child, config, args.out)))
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"fine-tuning {', '.join(SCHEDULES)}{' in parallel' if args.parallel else ''}: {args.steps} steps of "
          f"{args.batch_size} videos x {FRAMES} frames, lr {args.lr}, torch threads {torch.get_num_threads()}, "
          f"load average {load[0]:.1f}", flush=True)
    train_frames = benchmark_split("synthetic", None, "train", SamplingConfig(frames=FRAMES, size=112), args.cache,
                                   TRAINING_VIDEOS)
    arms = train_arms(str(Path(train_frames.frames.filename).parent), args)
    job = EvaluateJob(frames=FRAMES, cache=args.cache)
    results = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "frames": FRAMES, "parallel": args.parallel,
               "load_average_start": load, "arms": []}
    for arm in arms:
        arm["start"] = scored(None, arm["schedule"], job)
        arm["finetuned"] = scored(arm["checkpoint"], arm["schedule"], job)
        results["arms"].append(arm)
    results["load_average_end"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    baseline = arms[0]
    print(f"{'schedule':18s} {'model':10s} {'t2v R@1':>18s} {'t2v R@5':>18s} {'v2t R@1':>18s} {'t2v MnR':>18s} "
          f"{'train MiB':>9s} {'s/step':>7s}")
    for arm in arms:
        for model in ("start", "finetuned"):
            t2v, v2t = arm[model]["text_to_video"], arm[model]["video_to_text"]
            cost = (f"{arm['peak_training_bytes'] / 2**20:9.0f} {arm['seconds_per_step']:7.2f}" if model == "finetuned"
                    else "")
            print(f"{arm['schedule']:18s} {model:10s} {interval(t2v, 'R@1'):>18s} {interval(t2v, 'R@5'):>18s} "
                  f"{interval(v2t, 'R@1'):>18s} {interval(t2v, 'MnR'):>18s} {cost}")
    for arm in arms[1:]:
        saved = 1 - arm["peak_training_bytes"] / baseline["peak_training_bytes"]
        print(f"ratios: {arm['schedule']} vs none: training memory {saved * 100:.0f}% less, "
              f"{baseline['seconds_per_step'] / arm['seconds_per_step']:.2f}x step speed; load average at the end "
              f"{results['load_average_end'][0]:.1f}")


if __name__ == "__main__":
    main()
