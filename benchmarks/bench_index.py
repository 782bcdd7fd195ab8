"""Indexing throughput: the Ray Data pipeline (pipelines/index.py) against a single-process loop
(decode -> encode -> write) over the same videos, model and decoder, in the same run.

The loop calls the pipeline's own stages one after the other in one process: DecodeVideos (the
same isolated decode worker) on each video, then EncodeClips on each batch of ``--batch-size``
videos with torch on all cores, then the same write(). It is timed in both of the encoder's CPU
modes (one forward on all cores; one single-threaded forward per core side by side), and the
faster one is the baseline. Both write to a fresh LanceDB table.

Ray is started before the clock (a cluster is long-lived). Each path reports its start-up (Ray
Data planning, actors, model loads, the first batch: for the loop, the model load and decode
worker start) apart from its steady rate (videos after the first batch / time after it). The
last line is the ratio of steady rates (Ray / loop). With ``--repeats N`` the baseline loop and the
pipeline run N times each, alternately, and the last line is the median of the N ratios: a steady
window of a few seconds moves by 5-10% from run to run.

    python benchmarks/bench_index.py [--videos 800] [--repeats 3] [--encoders N] [--decoders N]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sys.path[0] is benchmarks/; centerclip/ is beside it

import numpy as np  # noqa: E402
import ray  # noqa: E402

from centerclip.datasets.synthetic import ensure_synthetic  # noqa: E402
from centerclip.index.batching import sources_batch  # noqa: E402
from centerclip.index.decode_stage import DecodeVideos  # noqa: E402
from centerclip.index.encode_stage import EncodeClips, EncodeSettings  # noqa: E402
from centerclip.index.job import IndexJob, MomentConfig  # noqa: E402
from centerclip.index.listing import list_inputs  # noqa: E402
from centerclip.model.registry import EncoderConfig, model_shape  # noqa: E402
from centerclip.index.progress import quiet_ray  # noqa: E402
from centerclip.index.store import Store  # noqa: E402
from centerclip.media.decoding import SamplingConfig  # noqa: E402
from centerclip.index.engine import run, write  # noqa: E402


class TreeCPU(threading.Thread):
    """CPU seconds used by this process and all its descendants (the decode worker, Ray's own
    processes, its workers and actors), sampled from /proc: a measure of work that other load on
    the machine does not inflate the way it inflates wall-clock time. Also the CPU seconds of the
    decoding processes alone (the decoder actors and their decode workers), to tell when decoding
    ended, and how many decoder actors ran."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.samples, self.seen, self.decoding = every, [], {}, set()
        self.start()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            children = collections.defaultdict(list)
            stats, actors = {}, 0
            for entry in filter(str.isdigit, os.listdir("/proc")):
                try:
                    fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                    # Only the actors carry the name: their decode workers are forked from a fork server.
                    if b"DecodeVideos" in open(f"/proc/{entry}/cmdline", "rb").read():
                        self.decoding.add(int(entry))
                        actors += 1
                except (OSError, ValueError):
                    continue
                children[int(fields[1])].append(int(entry))
                stats[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
            stack = [(os.getpid(), False)]
            decoding = 0.0
            while stack:
                pid, decoder = stack.pop()
                decoder = decoder or pid in self.decoding
                self.seen[pid] = max(self.seen.get(pid, 0.0), stats.get(pid, 0.0))  # exited processes keep their last value
                decoding += self.seen[pid] if decoder else 0.0
                stack.extend((child, decoder) for child in children[pid])
            self.samples.append((time.perf_counter(), sum(self.seen.values()), decoding, actors))
            time.sleep(self.every)

    def between(self, start: float, end: float) -> float:
        def at(moment: float) -> float:
            return min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]
        return at(end) - at(start)

    def decoding_ended(self, start: float, busy: float = 0.1) -> float:
        """The last sample after ``start`` at which the decoding processes used more than ``busy``
        of a core."""
        last = start
        for (_, _, before, _), (moment, _, after, _) in zip(self.samples, self.samples[1:]):
            if moment > start and after - before > busy * self.every:
                last = moment
        return last

    def most_decoders(self, start: float, end: float) -> int:
        """The most decoder actors running at once in [start, end]."""
        return max(actors for moment, _, _, actors in self.samples if start <= moment <= end)


class Writes:
    """Progress for centerclip.index.engine.run that records when each batch was written."""

    def __init__(self):
        self.times, self.videos = [], []

    def __enter__(self) -> Writes:
        return self

    def __exit__(self, *exc) -> None:
        """Nothing to close: the times stay for the benchmark to read."""

    def update(self, videos: int, moments: int, errors: int) -> None:
        self.times.append(time.perf_counter())
        self.videos.append((self.videos[-1] if self.videos else 0) + videos + errors)


def single_process(folder: Path, db: str, batch_size: int, parallel_forwards: bool) -> tuple[float, float, tuple[float, float]]:
    """The same stages called in a plain loop, one batch of videos at a time: (start-up seconds,
    steady videos/s after the first batch, the steady window's (start, end) clock times)."""
    start = time.perf_counter()
    config = EncoderConfig().resolved()
    shape = model_shape(config.model)
    store = Store.open(db, dim=shape.embed_dim)
    sources = list_inputs([str(folder)]).sources
    decode = DecodeVideos(sampling=SamplingConfig(frames=config.frames, size=shape.image_size), moments=MomentConfig())
    encode = EncodeClips(settings=EncodeSettings(encoder=config, threads=os.cpu_count(), parallel_forwards=parallel_forwards))
    first = None
    for begin in range(0, len(sources), batch_size):
        batch = sources_batch(sources[begin:begin + batch_size])
        decoded = [part for i in range(len(batch["uri"])) for part in decode({name: values[i:i + 1] for name, values in batch.items()})]
        merged = {name: np.concatenate([d[name] for d in decoded]) for name in decoded[0]}
        write(store, encode(merged))
        first = first or (time.perf_counter(), begin + len(batch["uri"]))
    end = time.perf_counter()
    decode.decoder.close()
    return first[0] - start, (len(sources) - first[1]) / (end - first[0]), (first[0], end)


def pipeline(job: IndexJob, cpu: TreeCPU) -> tuple[float, float, int, tuple[float, float], dict]:
    """One run of centerclip.index.engine.run: (start-up seconds, steady videos/s while decoding and
    encoding both ran, videos in that window, the window, run's summary)."""
    writes = Writes()
    summary = run(job, progress=lambda total: writes)
    time.sleep(2 * cpu.every)
    # Decoders run ahead while the encoders start (Ray Data buffers their output), so the rate after
    # the first batch is flattered by frames decoded before it. The steady rate is taken while both
    # stages run: from the first write to the last write before decoding ended.
    times, videos = writes.times, writes.videos
    ended = cpu.decoding_ended(start=times[0])
    last = max(i for i, moment in enumerate(times) if moment <= ended or i == 0)
    if last < max(2, len(times) // 4):
        sys.exit(f"decoding ended after {last} of {len(times)} writes: too few to measure both stages running; "
                 f"use more --videos")
    rate = (videos[last] - videos[0]) / (times[last] - times[0])
    return summary["startup_s"], rate, videos[last] - videos[0], (times[0], times[last]), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=800, help="synthetic videos to index (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the baseline loop and of the pipeline, "
                        "alternately; the last line is the median ratio (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=IndexJob.batch_size, help="videos per call (default: %(default)s)")
    parser.add_argument("--decoders", type=int, help="Ray decoder actors (default: the pipeline's own sizing)")
    parser.add_argument("--encoders", type=int, help="Ray encoder actors (default: the pipeline's own sizing)")
    parser.add_argument("--cache", default=".cache/centerclip", help="where the videos are generated")
    args = parser.parse_args()
    folder = ensure_synthetic(Path(args.cache) / f"bench-index-{args.videos}", args.videos, seed=2) / "videos"
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average; {os.cpu_count()} cores)")
    cpu = TreeCPU()
    quiet_ray()  # as the index job does: no progress bars, no warning about LanceDB and the loop's fork of its decode worker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        # The loop with one forward on all cores, once, for reference: it is never the faster one.
        startup, rate, window = single_process(folder, f"{scratch}/loop-intra-op", args.batch_size, False)
        per_video = cpu.between(*window) / (rate * (window[1] - window[0])) * 1000
        print(f"single-process loop, encoder intra-op threads: start-up {startup:.1f} s, steady {rate:.1f} videos/s, "
              f"{per_video:.1f} CPU ms/video")
        for repeat in range(args.repeats):
            startup, loop, window = single_process(folder, f"{scratch}/loop-{repeat}", args.batch_size, True)
            per_video = cpu.between(*window) / (loop * (window[1] - window[0])) * 1000
            print(f"[{repeat + 1}] single-process loop, encoder parallel threads (the baseline): start-up {startup:.1f} s, "
                  f"steady {loop:.1f} videos/s, {per_video:.1f} CPU ms/video")
            job = IndexJob(inputs=(str(folder),), db=f"{scratch}/ray-{repeat}", batch_size=args.batch_size,
                           decoders=args.decoders, encoders=args.encoders)
            startup, rate, videos, window, summary = pipeline(job, cpu)
            per_video = cpu.between(*window) / videos * 1000
            print(f"[{repeat + 1}] Ray Data pipeline: start-up {startup:.1f} s, steady {rate:.1f} videos/s while decoding and "
                  f"encoding both ran ({videos} videos in {window[1] - window[0]:.1f} s), {per_video:.1f} CPU ms/video, "
                  f"all processes; after the first batch to the end {summary['steady_videos_per_s']:.1f} videos/s "
                  f"(decoded run-ahead included), overall {summary['videos_per_s']:.1f} videos/s; ratio {rate / loop:.2f}x")
            ratios.append(rate / loop)
    print(f"{args.videos} videos, built-in model, 2 Ray CPUs, load after: {os.getloadavg()[0]:.2f}; "
          f"ratios {', '.join(f'{ratio:.2f}x' for ratio in ratios)}")
    print(f"ratio: Ray pipeline steady / single-process loop steady (parallel threads), median of {len(ratios)} = "
          f"{statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
