"""Decoding cost per SamplingConfig option, where the time goes, and what each option does to
embeddings and retrieval.

    python benchmarks/bench_decode.py [--repeats 2] [--files cityCC0.mpg ...] [--retrieval-videos 5000]

Inputs, generated here (bench_sizing's H.264 generator: libx264 veryfast, 30 fps, a drifting
textured background with moving discs): 640x360 x 30 s and 1280x720 x 2 min at x264's default
GOP (keyint 250, the long GOP), and the same two at keyint 30 (the short GOP), plus any --files.

1. **Where the time goes** (PyAV, one thread, each packet's decode timed on its own): demuxing;
   decoding the sampled frames; decoding reference frames that are needed only to reach them;
   decoding frames nobody needs; converting and scaling the sampled frames.
2. **Cost**: the indexer's own decoding call (``index_clips`` in the isolated ``Decoder`` worker:
   12 frames at 224 px for the whole video and per 10 s moment, thumbnails included), in videos
   per CPU-second of the worker and this process (and by the wall clock), median of --repeats.
3. **Embeddings**: cosine between each option's clip embeddings and the exact path's (the built-in
   model), whole video and moments apart.
4. **Retrieval**: a held-out synthetic set (seed 1: no video of it was trained on), its test split
   re-encoded at 224x224 (so decoding scales, as it does for real videos) with three B-frames
   between references and a keyframe every second (so snapping has frames to move), decoded with
   each option and searched with the built-in model: R@1, R@5, MnR and each one's difference
   from the exact path with a paired bootstrap interval. An option may be the default only if
   every interval holds 0 (the issue's rule); the embedding cosines are reported beside.

Writes benchmarks/results/decode.json (every figure) and prints a Markdown section; the last line
is ``decode: 720p-2min exact=A fastest-default=B videos/CPU-s (B/A = Nx), R@1 delta D [lo, hi]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402  (before decord: see centerclip/media/decoding.py)
import numpy as np  # noqa: E402

from bench_sizing import cpu_seconds, generate  # noqa: E402
from centerclip.index.decode_stage import DecodeVideos  # noqa: E402
from centerclip.index.job import MomentConfig  # noqa: E402
from centerclip.media.decoding import (  # noqa: E402
    EXACT, SamplingConfig, _plan, _probe_header, decode_options, decode_size, moments,
)

INPUTS = {"360p-30s": (640, 360, 30, None), "720p-2min": (1280, 720, 120, None),
          "360p-30s-gop30": (640, 360, 30, 30), "720p-2min-gop30": (1280, 720, 120, 30)}
# name: (backends, --decode options). "exact" is the default before this benchmark; each lever
# is then added on its own to PyAV at one thread, then in combinations.
OPTIONS = {
    "exact": (("decord", "pyav"), ""),
    "decord threads=1": (("decord", "pyav"), "threads=1"),
    "pyav threads=1": (("pyav",), "threads=1"),
    "skip": (("pyav",), "threads=1,skip=unneeded"),
    "seek": (("pyav",), "threads=1,seek"),
    "snap=reference": (("pyav",), "threads=1,snap=reference"),
    "snap=keyframe": (("pyav",), "threads=1,snap=keyframe"),
    "bilinear": (("pyav",), "threads=1,interpolation=bilinear"),
    "skip+seek": (("pyav",), "threads=1,skip=unneeded,seek"),
    "skip+seek+bilinear": (("pyav",), "threads=1,skip=unneeded,seek,interpolation=bilinear"),
    "skip+reference": (("pyav",), "threads=1,skip=unneeded,snap=reference"),
    "skip+seek+keyframe": (("pyav",), "threads=1,skip=unneeded,seek,snap=keyframe"),
    "skip+seek+keyframe+bilinear": (("pyav",), "threads=1,skip=unneeded,seek,snap=keyframe,interpolation=bilinear"),
}
EXACT_FRAMES = {"exact", "decord threads=1", "pyav threads=1", "skip", "seek", "skip+seek"}  # same frames, by design
HEADLINE = "720p-2min"
# A default must also embed like the exact path: a library indexed with it and a query video
# decoded with another would otherwise disagree. Snapping to keyframes moves the frames of a long
# video's whole clip by seconds (cosine about 0.98): an option to choose, not a default.
COSINE_FLOOR = 0.99


# Every option spelled out over these, so that a row means the same whatever SamplingConfig's defaults.
BEFORE = decode_options(EXACT)


def sampling(name: str, **values) -> SamplingConfig:
    backends, options = OPTIONS[name]
    return SamplingConfig.parse_options(options, backends=backends, **BEFORE, **values)


# --- 1. Where the time goes -----------------------------------------------------------------


def profile(path: Path) -> dict:
    """Seconds of one-threaded PyAV decoding of the exact sampled frames of the indexer's call, by
    what each packet's frame is for (its decode call timed alone: with one thread a packet's
    decode is its frame's work, give or take the reordering delay)."""
    header, _, _ = _probe_header(str(path))
    width, height = decode_size(header.width, header.height, 224)
    config = MomentConfig()

    def windows(duration):
        return [(0.0, None)] + (moments(duration, config.length, config.stride) if duration >= config.min_duration else [])

    began = time.process_time()
    with av.open(str(path)) as container:
        packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(video=0) if packet.pts is not None]
    demux = time.process_time() - began
    order = sorted(pts for pts, _ in packets)
    index = {pts: i for i, pts in enumerate(order)}
    info = _plan(str(path), replace(header, frames=len(order)), SamplingConfig(), windows)
    targets = set(info[3].tolist())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        references = {index[frame.pts] for frame in container.decode(stream)}
    keyframes = sorted(index[pts] for pts, key in packets if key)
    # Frames needed to reach a target: reference frames from the keyframe before it up to it.
    needed = set()
    for target in targets:
        start = max([key for key in keyframes if key <= target], default=0)
        needed.update(i for i in range(start, target) if i in references)
    seconds = {"demux": demux, "sampled frames": 0.0, "references to reach them": 0.0, "frames nobody needs": 0.0}
    kept = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            began = time.thread_time()
            frames = packet.decode()
            spent = time.thread_time() - began
            i = index[packet.pts]
            kind = "sampled frames" if i in targets else "references to reach them" if i in needed else "frames nobody needs"
            seconds[kind] += spent
            kept += [frame for frame in frames if index.get(frame.pts) in targets]
    began = time.process_time()
    for frame in kept:
        frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BICUBIC")
    seconds["convert and scale the sampled frames (bicubic)"] = time.process_time() - began
    return {"frames": len(order), "sampled": len(targets), "needed references": len(needed),
            "references": len(references), "keyframes": len(keyframes), "seconds": seconds}


# --- 2. Cost --------------------------------------------------------------------------------


def cost(path: Path, name: str, repeats: int) -> dict:
    """Videos per CPU-second (worker + this process) and per wall second, median of ``repeats``,
    and the clips of the last call."""
    stage = DecodeVideos(sampling=sampling(name, frames=12, size=224), moments=MomentConfig())
    try:
        clips = stage.clips(str(path))  # starts the worker: not timed
        worker = stage.decoder._process.pid
        cpu, wall = [], []
        for _ in range(repeats):
            began, used = time.perf_counter(), cpu_seconds(worker) + time.process_time()
            clips = stage.clips(str(path))
            cpu.append(cpu_seconds(worker) + time.process_time() - used)
            wall.append(time.perf_counter() - began)
        return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "frames": clips[0]}
    finally:
        stage.decoder.close()


# --- 3. Embeddings ----------------------------------------------------------------------------


def embed(encoder, frames: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return encoder.encode_video(encoder.preprocess(torch.from_numpy(np.ascontiguousarray(frames)))).numpy()


# --- 4. Retrieval -----------------------------------------------------------------------------


def retrieval_set(cache: Path, videos: int) -> Path:
    """The held-out synthetic set's test split, re-encoded at 224 px with B-frames and 1 s GOPs."""
    from centerclip.datasets.synthetic import ensure_synthetic

    source = ensure_synthetic(cache / f"synthetic-seed1-{videos}", videos, seed=1)
    out = cache / f"synthetic-seed1-{videos}-224px-gop1s-bf3"
    if (out / "done").is_file():
        return out
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for name in os.listdir(source):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    from centerclip.datasets import load

    table = load("synthetic", str(source), "test")
    for video_id in table["video_id"].to_pylist():
        target = out / "videos" / f"{video_id}.mp4"
        if target.is_file():
            continue
        with av.open(str(source / "videos" / f"{video_id}.mp4")) as given, av.open(str(target), "w") as written:
            rate = int(given.streams.video[0].average_rate)
            params = f"keyint={rate}:min-keyint={rate}:bframes=3:b-adapt=0:b-pyramid=normal"
            stream = written.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "18", "x264-params": params})
            stream.width, stream.height, stream.pix_fmt = 224, 224, "yuv420p"
            for number, frame in enumerate(given.decode(video=0)):
                frame = frame.reformat(width=224, height=224, format="yuv420p", interpolation="BICUBIC")
                frame.pts, frame.time_base = number, Fraction(1, rate)
                frame.pict_type = av.video.frame.PictureType.NONE  # the source's I/P types would force x264's
                written.mux(stream.encode(frame))
            written.mux(stream.encode())
    (out / "done").write_text("")
    return out


def text_to_video_ranks(encoder, data) -> np.ndarray:
    import torch

    from centerclip.train.evaluation import embed_captions, embed_videos
    from centerclip.train.metrics import ranks

    with torch.inference_mode():
        videos = embed_videos(encoder, data, np.arange(len(data)))
        captions, caption_video = embed_captions(encoder, data)
    positives = torch.from_numpy(caption_video)[:, None] == torch.arange(len(videos))[None, :]
    return ranks(captions @ videos.T, positives).numpy()


def retrieval(encoder, root: Path, names: list[str]) -> dict:
    from centerclip.datasets import load
    from centerclip.media.frames import decode_split
    from centerclip.train.metrics import paired_differences, summarise

    table = load("synthetic", str(root), "test")
    results, exact = {}, None
    for name in names:
        data, failures = decode_split(table, sampling(name, frames=encoder.frames, size=encoder.image_size[0]))
        if failures:
            raise SystemExit(f"{name}: {len(failures)} videos failed to decode, the first: {failures[0]}")
        ranks = text_to_video_ranks(encoder, data)
        exact = ranks if exact is None else exact
        results[name] = {"queries": len(ranks), **summarise(ranks),
                         "difference": {metric: paired_differences(exact, ranks, resamples=2000)[metric]
                                        for metric in ("R@1", "R@5", "MnR")}}
        print(f"retrieval {name}: R@1 {results[name]['R@1']:.2f} R@5 {results[name]['R@5']:.2f} "
              f"MnR {results[name]['MnR']:.2f}; R@1 delta {results[name]['difference']['R@1']}", flush=True)
    return results


def holds_zero(result: dict) -> bool:
    return all(low <= 0 <= high for _, low, high in result["difference"].values())


def may_be_default(results: dict, option: str) -> bool:
    """Retrieval within its paired intervals (the issue's rule), and embeddings that stay within
    COSINE_FLOOR of the exact path's on every input, whole videos and moments alike."""
    cosine = results["cosine"][option]
    return holds_zero(results["retrieval"][option]) and min(cosine.values()) >= COSINE_FLOOR


# --- Report -------------------------------------------------------------------------------------


def report(results: dict) -> str:
    load = results["load"]
    lines = ["## Decoding less: where the time goes, and each option's cost and quality", "",
             f"Command: `{results['command']}`. "
             f"Machine: {results['machine']}; load average {load[0]:.2f} before, {load[1]:.2f} after. "
             "Raw figures: `benchmarks/results/decode.json`.", "",
             "### Where the time goes (PyAV, one thread, exact sampled frames of the indexer's call; CPU-seconds)", "",
             "| input | frames | sampled | demux | sampled frames | references to reach them | frames nobody needs "
             "| convert + scale sampled | keyframes | reference frames |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, item in results["profile"].items():
        s = item["seconds"]
        lines.append(f"| {name} | {item['frames']} | {item['sampled']} | {s['demux']:.2f} | {s['sampled frames']:.2f} "
                     f"| {s['references to reach them']:.2f} | {s['frames nobody needs']:.2f} "
                     f"| {s['convert and scale the sampled frames (bicubic)']:.2f} | {item['keyframes']} | {item['references']} |")
    inputs = list(results["cost"])
    lines += ["", "### Videos per CPU-second (the indexer's decoding call in its worker; x = against `exact`)", "",
              "| option | `--decode` | " + " | ".join(inputs) + " | embedding cosine, min (whole / moments) |",
              "|---|---|" + "---|" * len(inputs) + "---|"]
    for option in OPTIONS:
        cells = []
        for name in inputs:
            rate, base = 1 / results["cost"][name][option]["cpu_s"], 1 / results["cost"][name]["exact"]["cpu_s"]
            cells.append(f"{rate:.3f} ({rate / base:.2f}x)")
        cos = results["cosine"][option]
        lines.append(f"| {option} | `{OPTIONS[option][1]}` | " + " | ".join(cells)
                     + f" | {cos['whole']:.4f} / {cos['moments']:.4f} |")
    lines += ["", f"### Retrieval: held-out synthetic set re-encoded at 224 px with B-frames and 1 s GOPs "
              f"({results['retrieval'][next(iter(results['retrieval']))]['queries']} text->video queries)", "",
              f"| option | R@1 | R@5 | MnR | R@1 delta [95%] | R@5 delta [95%] | MnR delta [95%] "
              f"| may be default (intervals hold 0, cosine >= {COSINE_FLOOR}) |",
              "|---|---|---|---|---|---|---|---|"]
    for option, item in results["retrieval"].items():
        d = item["difference"]
        lines.append(f"| {option} | {item['R@1']:.2f} | {item['R@5']:.2f} | {item['MnR']:.2f} | "
                     + " | ".join(f"{d[m][0]:+.2f} [{d[m][1]:+.2f}, {d[m][2]:+.2f}]" for m in ("R@1", "R@5", "MnR"))
                     + f" | {'yes' if may_be_default(results, option) else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per option and input (median)")
    parser.add_argument("--files", nargs="*", default=[], help="more inputs: real video files")
    parser.add_argument("--cache", default=".cache/centerclip/decode", help="where generated inputs are kept")
    parser.add_argument("--retrieval-videos", type=int, default=5000,
                        help="size of the held-out synthetic set (its test split, a fifth, is searched)")
    parser.add_argument("--out", default="benchmarks/results/decode.json", help="where the raw figures go")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: print the report of a saved run")
    args = parser.parse_args()
    if args.from_json:
        return conclude(json.loads(Path(args.from_json).read_text()))
    cache = Path(args.cache)
    from centerclip.model.encoder import EncoderConfig, VideoEncoder

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    results = {"machine": f"{cpu}, {os.cpu_count()} CPU cores, "
               f"PyAV {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})",
               "command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]),
               "load": [os.getloadavg()[0]], "profile": {}, "cost": {}, "cosine": {}}
    paths = {name: generate(cache / f"h264-{w}x{h}-{s}s-keyint{k or 250}.mp4", w, h, s, k)
             for name, (w, h, s, k) in INPUTS.items()}
    paths.update({Path(file).name: Path(file) for file in args.files})
    encoder = VideoEncoder.create(EncoderConfig(frames=12)).eval()
    cosines: dict[str, dict[str, list[float]]] = {option: {"whole": [], "moments": []} for option in OPTIONS}
    for name, path in paths.items():
        results["profile"][name] = profile(path)
        print(f"profile {name}: {results['profile'][name]}", flush=True)
        results["cost"][name] = {}
        exact_embeddings = None
        for option in OPTIONS:
            measured = cost(path, option, args.repeats)
            frames = measured.pop("frames")
            embeddings = embed(encoder, frames)
            exact_embeddings = embeddings if exact_embeddings is None else exact_embeddings
            similarity = (embeddings * exact_embeddings).sum(-1)
            cosines[option]["whole"].append(float(similarity[0]))
            cosines[option]["moments"] += similarity[1:].tolist()
            results["cost"][name][option] = {**measured, "cosine_whole": float(similarity[0]),
                                             "cosine_moments_min": float(similarity[1:].min()) if len(similarity) > 1 else None}
            print(f"cost {name} {option}: {1 / measured['cpu_s']:.3f} videos/CPU-s, {measured['wall_s']:.2f} s wall, "
                  f"cosine {similarity.min():.4f}", flush=True)
    results["cosine"] = {option: {kind: min(values) if values else float("nan") for kind, values in kinds.items()}
                         for option, kinds in cosines.items()}
    encoder = VideoEncoder.create(EncoderConfig()).eval()
    results["retrieval"] = retrieval(encoder, retrieval_set(cache, args.retrieval_videos), list(OPTIONS))
    results["load"].append(os.getloadavg()[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    conclude(results)


def conclude(results: dict) -> None:
    print(report(results))
    headline = results["cost"][HEADLINE]
    eligible = [option for option in OPTIONS if may_be_default(results, option)]
    fastest = min(eligible, key=lambda option: headline[option]["cpu_s"])
    exact_rate, fastest_rate = 1 / headline["exact"]["cpu_s"], 1 / headline[fastest]["cpu_s"]
    delta, low, high = results["retrieval"][fastest]["difference"]["R@1"]
    print(f"fastest option that may be the default: {fastest} (--decode {OPTIONS[fastest][1]!r})")
    default = [option for option in OPTIONS if all(getattr(sampling(option), name) == getattr(SamplingConfig(), name)
                                                   for name in BEFORE)]
    print(f"SamplingConfig's defaults are the row {default[0]!r}" if default else "SamplingConfig's defaults are none of the rows")
    print(f"decode: {HEADLINE} exact={exact_rate:.3f} fastest-default={fastest_rate:.3f} videos/CPU-s "
          f"(B/A = {fastest_rate / exact_rate:.2f}x), R@1 delta {delta:+.2f} [{low:+.2f}, {high:+.2f}]")


if __name__ == "__main__":
    main()
