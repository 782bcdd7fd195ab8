"""Memory of index jobs, measured from outside: the proportional set size (PSS) of the job's whole
process tree (driver, Ray's processes, actors, decode workers), sampled from /proc every 0.25 s.

1. The default job (`python pipelines/index.py`: the 40-video sample set) in an empty folder.
2. Long videos: `--videos` generated 2-minute videos indexed as whole videos only (for reference),
   then with 1-s moments (121 clips a video) at each of `--batch-sizes`. A decoder call ships its
   videos in blocks of about 128 MiB and the encoder takes them as they come, so the peak should
   follow the block, not the batch: the last line is the peak at the largest batch size over the
   peak at the smallest (the baseline).

    python benchmarks/bench_index_memory.py [--videos 32] [--batch-sizes 8 16 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sys.path[0] is benchmarks/; centerclip/ is beside it

from centerclip.datasets.synthetic import write_video  # noqa: E402


def tree(root: int) -> list[tuple[int, str]]:
    """(PSS in KiB, command line) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            pss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
            found.append((pss, open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()))
        except (OSError, StopIteration):  # exited meanwhile
            pass
    return found


def peak(command: list[str], cwd: str) -> tuple[int, list[tuple[int, str]]]:
    """The process tree's largest summed PSS (KiB) while ``command`` ran, and its processes then."""
    job = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    best: tuple[int, list] = (0, [])
    while job.poll() is None:
        processes = tree(job.pid)
        best = max(best, (sum(pss for pss, _ in processes), processes), key=lambda found: found[0])
        time.sleep(0.25)
    if job.returncode:
        sys.exit(f"{' '.join(command)} failed: {job.stderr.read().decode()[-2000:]}")
    return best


def stripes(seconds: int, fps: int = 10) -> np.ndarray:
    """Frames of small moving stripes (48x32): cheap to decode, ``seconds`` long."""
    frames = np.zeros((seconds * fps, 32, 48, 3), np.uint8)
    for index, frame in enumerate(frames):
        frame[:, (index + np.arange(48)) % 12 < 6] = (200, 60, 30)
    return frames


def report(label: str, found: tuple[int, list[tuple[int, str]]]) -> float:
    total, processes = found
    biggest = ", ".join(f"{pss / 1024:.0f} MiB {name.split()[0][:48]}" for pss, name in sorted(processes, reverse=True)[:3])
    print(f"{label}: peak {total / 1024:,.0f} MiB ({total * 1024 / 1e9:.2f} GB); largest: {biggest}", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32, help="2-minute videos to generate (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32], help="--batch-size of the moments runs")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average; {os.cpu_count()} cores)")
    index = [sys.executable, str(ROOT / "pipelines" / "index.py")]
    with tempfile.TemporaryDirectory() as scratch:
        report("default job (40 sample videos)", peak(index, scratch))
        videos = Path(scratch) / "long"
        videos.mkdir()
        frames = stripes(seconds=120)
        for number in range(args.videos):
            write_video(frames, videos / f"long{number:03d}.mp4", fps=10)
        whole_only = ["--moments-after", "1000"]
        report("long videos, whole-video clips only", peak([*index, str(videos), "--db", f"{scratch}/whole.lancedb",
                                                            *whole_only], scratch))
        peaks = {}
        for batch in sorted(args.batch_sizes):
            moments = ["--moment-length", "1", "--moment-stride", "1", "--moments-after", "1", "--batch-size", str(batch)]
            peaks[batch] = report(f"long videos, 1-s moments (121 clips a video), --batch-size {batch}",
                                  peak([*index, str(videos), "--db", f"{scratch}/moments-{batch}.lancedb", *moments], scratch))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    smallest, largest = min(peaks), max(peaks)
    print(f"ratio: peak at --batch-size {largest} / peak at --batch-size {smallest} (baseline) = "
          f"{peaks[largest] / peaks[smallest]:.2f}x")


if __name__ == "__main__":
    main()
