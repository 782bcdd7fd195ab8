"""Synthetic benchmark generation speed: videos per second on one core, at 112 and 224 px.

    python benchmarks/bench_synthetic.py [--videos 200]

Each size is generated from scratch into a temporary directory with one worker (render, encode,
write, annotations), timed by the wall clock and by this process's CPU time (the CPU figure is
steadier on a shared machine). Rendering alone is timed too, to show where the time goes. Results
are printed and written to benchmarks/RESULTS_synthetic.md with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from centerclip.datasets.synthetic import CODEC, generate, render
from centerclip.datasets.synthetic_scenes import plan

SIZES = (112, 224)
RESULTS = Path(__file__).with_name("RESULTS_synthetic.md")


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")


def measure(videos: int, size: int, seed: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        wall, cpu = time.perf_counter(), time.process_time()
        report = generate(Path(directory) / "out", videos, seed, size=size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        megabytes = sum(f.stat().st_size for f in (report.out / "videos").iterdir()) / 1e6
    scenes = [video.scene for video in plan(videos, seed)]
    began = time.process_time()
    frames = sum(len(render(scene, size, 10)) for scene in scenes)
    rendering = time.process_time() - began
    return {
        "videos_per_s": videos / wall,
        "videos_per_cpu_s": videos / cpu,
        "render_ms": 1000 * rendering / videos,
        "total_ms": 1000 * cpu / videos,
        "frames": frames / videos,
        "kilobytes": 1000 * megabytes / videos,
    }


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200, help="videos generated per frame size (default 200)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write (default %(default)s)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # other jobs on a shared machine lower the wall-clock figures
    results = {size: measure(args.videos, size) for size in SIZES}

    command = " ".join(["python benchmarks/bench_synthetic.py", *(sys.argv[1:] if argv is None else argv)])
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, load average {load_before:.1f} at the start;"
        f" one worker process; codec {CODEC}; 10 fps, 4-8 s clips"
    )
    rows = [
        f"| {size} px | {r['videos_per_s']:.1f} | {r['videos_per_cpu_s']:.1f} | {r['render_ms']:.1f} | "
        f"{r['total_ms']:.1f} | {r['frames']:.0f} | {r['kilobytes']:.0f} |"
        for size, r in results.items()
    ]
    report = "\n".join(
        [
            "## Synthetic benchmark generation speed",
            "",
            f"Command: `{command}` ({args.videos} videos per size, from scratch, seed 0).",
            f"Machine: {machine}.",
            "",
            "| size | videos/s (wall) | videos/CPU-s | render ms/video | CPU ms/video | frames/video | kB/video |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "CPU ms/video = render + H.264 encode + file and annotation writes, all in this one process.",
            "Target: >= 20 videos/s per core at 112 px.",
            "",
        ]
    )
    print(report)
    args.results.write_text(report, encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
