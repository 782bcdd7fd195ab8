"""Sizing an indexing cluster: how fast one CPU core decodes realistic videos, and how fast an
encoder embeds them, so that decoders can be matched to encoders (CPU cores per GPU).

Inputs are generated here with PyAV (no downloads): H.264 (libx264, preset veryfast, yuv420p,
30 fps) 640x360 x 30 s and 1280x720 x 2 min, with moving shapes over a textured, drifting
background so that the encoder cannot skip the frames. Decoding is the indexer's own call
(``Decoder.sample_video`` in its isolated worker: 12 frames at 224 px for the whole video plus,
for videos of 20 s and more, 12 per 10 s moment) pinned to one core. Encoding is ViT-B-32 with
random weights (timing only: weights do not change the cost) at 12 frames of 224 px, schedule
``none`` and ``kmedoids@6:4x49``, on CPU in bfloat16 where the CPU computes it natively, else fp32 (all cores, one single-threaded forward per core as
the indexer runs it) or fp16 on a GPU with ``--device cuda``.

Each CPU figure is given twice: by the wall clock, and per CPU-second actually used (the decode
worker's and this process's CPU time from /proc). On a shared machine the second is the one to
trust: other load stretches wall time, not the CPU time the work needs.

    python benchmarks/bench_sizing.py                  # CPU: decode per core, encoder on CPU
    python benchmarks/bench_sizing.py --device cuda    # on a GPU machine: adds cores per GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402

from centerclip.index.decode_stage import DecodeVideos  # noqa: E402
from centerclip.index.job import MomentConfig  # noqa: E402
from centerclip.media.decoding import SamplingConfig  # noqa: E402

INPUTS = {"640x360, 30 s": (640, 360, 30), "1280x720, 2 min": (1280, 720, 120)}
FPS = 30


def generate(path: Path, width: int, height: int, seconds: int, keyint: int | None = None) -> Path:
    """A deterministic H.264 test video (written once, then reused); ``keyint``: the longest GOP
    (x264's default is 250 frames, with extra keyframes at scene cuts)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (height * 2, width * 2, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        options = {"preset": "veryfast", "crf": "23", **({"g": str(keyint)} if keyint else {})}
        stream = container.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(seconds * FPS):
            t = index / FPS
            dy, dx = int(20 * t) % height, int(35 * t) % width  # a drifting background, like a panning camera
            frame = texture[dy:dy + height, dx:dx + width] + np.uint8(90)
            for shape in range(4):  # four discs crossing the frame at different speeds
                cx = (width * (0.2 + 0.2 * shape) + 60 * t * (shape + 1)) % width
                cy = height * (0.5 + 0.3 * np.sin(t * (shape + 1) / 3))
                inside = (x - cx) ** 2 + (y - cy) ** 2 < (height / 10) ** 2
                frame[inside] = (60 * shape, 255 - 60 * shape, 128)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = index, Fraction(1, FPS)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decode_rate(path: Path, repeats: int) -> tuple[float, float, int]:
    """Videos/s of the indexer's decoding stage on one core (wall clock, and per CPU-second of
    the decode worker and this process), and clips per video."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # the decode worker inherits it
    stage = DecodeVideos(sampling=SamplingConfig(frames=12, size=224), moments=MomentConfig())
    try:
        frames = stage.clips(str(path))[0]  # starts the worker: not timed
        worker = stage.decoder._process.pid
        start, cpu = time.perf_counter(), cpu_seconds(worker) + time.process_time()
        for _ in range(repeats):
            stage.clips(str(path))
        cpu = cpu_seconds(worker) + time.process_time() - cpu
        return repeats / (time.perf_counter() - start), repeats / cpu, len(frames)
    finally:
        stage.decoder.close()
        os.sched_setaffinity(0, range(os.cpu_count()))


def encode_rate(schedule: str, device: str, videos: int, repeats: int) -> tuple[float, float]:
    """Clips/s (12 frames at 224 px each) of ViT-B-32 with random weights: by the wall clock, and
    per CPU-second of this process."""
    import torch

    from centerclip.index.encode_stage import EncodeClips, EncodeSettings
    from centerclip.model.registry import EncoderConfig
    from centerclip.model.schedule import Schedule

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to torch here")
    cores = len(os.sched_getaffinity(0))
    config = EncoderConfig(model="ViT-B-32", schedule=Schedule.parse(schedule), frames=12)
    stage = EncodeClips(settings=EncodeSettings(encoder=config, threads=None if device == "cuda" else cores))
    frames = np.random.default_rng(0).integers(0, 256, (videos, 12, 224, 224, 3), dtype=np.uint8)
    stage.embed(frames)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        stage.embed(frames)
    if device == "cuda":
        torch.cuda.synchronize()
    return videos * repeats / (time.perf_counter() - start), videos * repeats / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the encoder runs (default: cpu)")
    parser.add_argument("--cache", default=".cache/centerclip/sizing", help="where the test videos are written")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each measurement")
    parser.add_argument("--videos", type=int, help="videos per encoder call (default: 4 on CPU, 64 on a GPU)")
    args = parser.parse_args()
    videos = args.videos or (64 if args.device == "cuda" else 4)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average, {os.cpu_count()} cores)")
    decode = {}
    for name, (width, height, seconds) in INPUTS.items():
        path = generate(Path(args.cache) / f"h264-{width}x{height}-{seconds}s.mp4", width, height, seconds)
        decode[name] = decode_rate(path, args.repeats)
        wall, per_cpu, clips = decode[name]
        print(f"decode {name} H.264 ({clips} clips of 12 frames at 224 px), one core: {wall:.2f} videos/s by the wall "
              f"clock, {per_cpu:.2f} videos per CPU-second")
    encode = {}
    for schedule in ("none", "kmedoids@6:4x49"):
        encode[schedule] = encode_rate(schedule, args.device, videos, args.repeats)
        import torch

        from centerclip.index.encode_stage import cpu_has_bfloat16

        precision = "bfloat16" if cpu_has_bfloat16(torch) else "fp32"
        where = "fp16 on the GPU" if args.device == "cuda" else f"{precision} on {len(os.sched_getaffinity(0))} CPU cores"
        wall, per_cpu = encode[schedule]
        print(f"encode ViT-B-32 (random weights), {schedule}, {where}: {wall:.2f} clips/s by the wall clock"
              + ("" if args.device == "cuda" else f", {per_cpu:.2f} clips per CPU-second") + f" ({videos} clips per call)")
    if args.device == "cuda":
        for name, (_, rate, clips) in decode.items():
            for schedule, (clip_rate, _) in encode.items():
                print(f"CPU cores per GPU for {name} with {schedule}: {clip_rate / clips / rate:.1f} "
                      f"(GPU {clip_rate / clips:.1f} videos/s / {rate:.2f} videos per CPU-second)")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
