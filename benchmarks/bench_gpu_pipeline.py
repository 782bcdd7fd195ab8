"""The GPU's busy share while the indexing pipeline runs: how well the decoders keep one GPU fed.

Indexes ``--videos`` copies of one of bench_sizing.py's generated H.264 inputs through
pipelines/index.py's own ``run`` with ViT-B-32 (random weights: weights do not change the cost)
on the GPU (``gpus_per_encoder=1``, fp16) and the decoding pool sized by the pipeline itself over
the machine's CPUs, as a user would run it without ``--decoders``. While it runs, NVML is sampled
every 0.1 s for the GPU's utilisation (the share of time a kernel was running), and /proc (as
bench_index.py does) for the number of decoding actors. Reported over the steady window: from the
first write to the last write before decoding ended (as in bench_index.py). Needs an NVIDIA GPU
and nvidia-ml-py.

    python benchmarks/bench_gpu_pipeline.py [--videos 400] [--input 640x360] [--schedule none]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sys.path[0] is benchmarks/; centerclip/ is beside it

import ray  # noqa: E402

from bench_index import TreeCPU, pipeline  # noqa: E402
from bench_sizing import INPUTS, generate  # noqa: E402
from centerclip.index.job import IndexJob  # noqa: E402


class GpuSampler(threading.Thread):
    """(time, GPU utilisation %) every ``every`` seconds, from NVML."""

    def __init__(self, every: float = 0.1):
        try:
            import pynvml
        except ImportError:
            raise SystemExit("bench_gpu_pipeline.py reads the GPU through NVML: pip install nvidia-ml-py") from None

        super().__init__(daemon=True)
        pynvml.nvmlInit()
        self.nvml, self.handle, self.every, self.samples = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0), every, []
        self.start()

    def run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
            time.sleep(self.every)

    def busy(self, start: float, end: float) -> float:
        """Mean utilisation (%) in [start, end]."""
        window = [busy for moment, busy in self.samples if start <= moment <= end]
        return sum(window) / len(window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=400, help="copies of the input to index (default: %(default)s)")
    parser.add_argument("--input", choices=("640x360", "1280x720"), default="640x360",
                        help="which of bench_sizing.py's inputs (default: %(default)s)")
    parser.add_argument("--schedule", default="none", help="token-clustering schedule (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=IndexJob.batch_size, help="videos per call (default: the pipeline's, %(default)s)")
    parser.add_argument("--cache", default=".cache/centerclip/sizing", help="where the test videos are written")
    args = parser.parse_args()
    name, (width, height, seconds) = next((name, size) for name, size in INPUTS.items() if name.startswith(args.input))
    source = generate(Path(args.cache) / f"h264-{width}x{height}-{seconds}s.mp4", width, height, seconds)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average; {os.cpu_count()} cores)")
    gpu, cpu = GpuSampler(), TreeCPU()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    resources = ray.cluster_resources()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "videos"
        folder.mkdir()
        for index in range(args.videos):  # copies, not links: links of one file are one video to the indexer
            shutil.copyfile(source, folder / f"{index:05d}.mp4")
        job = IndexJob(inputs=(str(folder),), db=f"{scratch}/index", model="ViT-B-32", schedule=args.schedule,
                       frames=12, batch_size=args.batch_size, gpus_per_encoder=1)
        startup, rate, videos, window, _ = pipeline(job, cpu)
    busy, actors = gpu.busy(*window), cpu.most_decoders(*window)
    print(f"{args.videos} x {name} H.264, ViT-B-32 {args.schedule} fp16 on 1 GPU, {resources.get('CPU', 0):.0f} Ray CPUs: "
          f"start-up {startup:.1f} s, steady {rate:.1f} videos/s ({videos} videos in {window[1] - window[0]:.1f} s) "
          f"with up to {actors} decoding actors")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(f"GPU busy share while decoding and encoding both ran: {busy:.1f}%")


if __name__ == "__main__":
    main()
