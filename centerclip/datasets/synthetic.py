"""Our own text-video retrieval benchmark: moving shapes and captions from a small grammar.

It exists so that a tiny CLIP can be trained and evaluated with no internet. Videos are short
clips of coloured shapes on a plain background; a caption names each thing's count, size, colour
and shape, the background, and what happens: a group moves left / right / up / down, slowly or
quickly, or two things act one after the other ("a red circle moves left, then a blue square
appears"). Videos come in pairs, and half the pairs are *twins*: the same things, colours and
background, with the motion reversed in time (so the opposite direction, and exactly the same set
of frames) or the two events swapped. A twin's captions differ from its partner's only in
direction or event order, so no single-frame (or frame-averaging) model can tell them apart; the
tables mark such videos ``temporal``.

Layout, readable by the MSR-VTT adapter (``centerclip.datasets.synthetic`` is that adapter with our
file names, ``load("synthetic", out, split="test")``)::

    <out>/videos/video<i>.mp4           H.264 (mpeg4 where PyAV lacks libx264), rgb24 -> yuv420p
    <out>/MSRVTT_data.json              {"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}]}
    <out>/synthetic_train.csv           video_id,temporal          (captions from the JSON)
    <out>/synthetic_{val,test}.csv      key,vid_key,video_id,sentence,temporal   (1k-A format)
    <out>/synthetic.json                the settings the videos were made with (the cache key)

Everything is a function of (seed, video index): the same seed gives byte-identical annotations
and identical frames, a larger ``videos`` extends a smaller set, and re-running skips videos whose
files exist (they are written under a temporary name and renamed, so a file is never half there).

    python -m centerclip.datasets.synthetic --out data/synthetic --videos 2000 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av
import numpy as np

from .msrvtt import EVALUATION_VIDEOS, TRAINING_VIDEOS  # noqa: F401  (the set sizes, re-exported)
from .msrvtt import SYNTHETIC_FILES as FILES
from .synthetic_scenes import BACKGROUNDS, COLORS, RADII, SHAPES, SPACING, VISIBILITY, Scene, Video, plan

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Settings:
    """What the frames depend on besides the scene; saved as synthetic.json, the cache key."""

    seed: int = 0
    size: int = 112
    fps: int = 10


@dataclass(frozen=True)
class Report:
    out: Path
    written: int
    skipped: int
    seconds: float


# ---------------------------------------------------------------------------- frames and files


def render(scene: Scene, size: int, fps: int) -> np.ndarray:
    """The clip as uint8 RGB frames [seconds * fps, size, size, 3]."""
    clock = np.linspace(0.0, 1.0, scene.seconds * fps)  # each frame's time as a share of the clip
    pixels = (np.arange(size) + 0.5) / size
    video = np.empty((len(clock), size, size, 3), np.uint8)
    video[:] = BACKGROUNDS[scene.background]
    slots = len(scene.events)
    # Moving things first, so a thing that appears or disappears is never hidden behind one.
    for slot, event in sorted(enumerate(scene.events), key=lambda item: item[1].action != "moves"):
        begin, finish = (slot + 0.1) / slots, (slot + 0.9) / slots
        progress = np.clip((clock - begin) / (finish - begin), 0.0, 1.0)
        visible = VISIBILITY[event.action](progress)[:, None, None]
        start, end = np.array(event.start), np.array(event.end)
        centres = start + (end - start) * progress[:, None]
        radius = RADII[event.thing.size]
        across = np.array((1.0, 0.0) if event.direction in ("up", "down") else (0.0, 1.0))
        for copy in range(event.thing.count):
            centre = centres + across * SPACING * radius * (copy - (event.thing.count - 1) / 2)
            u = (pixels[None, None, :] - centre[:, 0, None, None]) / radius
            v = (pixels[None, :, None] - centre[:, 1, None, None]) / radius
            video[SHAPES[event.thing.shape](u, v) & visible] = COLORS[event.thing.color]
    return video


CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
CODEC_OPTIONS = {"libx264": {"preset": "ultrafast", "crf": "18"}, "mpeg4": {"b": "2M"}}


def write_video(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode under a temporary name beside ``path`` and rename, so ``path`` only ever holds a whole video."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
    os.close(handle)
    try:
        with av.open(temporary, "w", format="mp4") as container:
            stream = container.add_stream(CODEC, rate=fps, options=CODEC_OPTIONS[CODEC])
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # one core per worker, and reproducible bytes
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _make_video(job: tuple[Scene, Path], size: int, fps: int) -> None:
    scene, path = job
    write_video(render(scene, size, fps), path, fps)


def _write_text(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    os.replace(temporary, path)


def _csv(header: Sequence[str], rows: list[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_annotations(out: Path, videos: list[Video], settings: Settings) -> None:
    data = {
        "videos": [
            {
                "video_id": video.video_id,
                "split": video.split,
                "frames": video.scene.seconds * settings.fps,
                "fps": settings.fps,
                "temporal": video.twin is not None,
                "twin": video.twin,
                "scene": dataclasses.asdict(video.scene),
            }
            for video in videos
        ],
        "sentences": [
            {"video_id": video.video_id, "caption": text, "sen_id": number}
            for number, (video, text) in enumerate((video, text) for video in videos for text in video.captions)
        ],
    }
    _write_text(out / "MSRVTT_data.json", json.dumps(data, indent=1, sort_keys=True) + "\n")

    def temporal(video: Video) -> str:
        return "true" if video.twin is not None else "false"

    train = [(video.video_id, temporal(video)) for video in videos if video.split == "train"]
    _write_text(out / FILES["train"], _csv(("video_id", "temporal"), train))
    for split in ("val", "test"):
        members = [video for video in videos if video.split == split]
        queries = [
            (f"ret{number}", video.video_id.replace("video", "syn"), video.video_id, video.captions[0], temporal(video))
            for number, video in enumerate(members)
        ]
        _write_text(out / FILES[split], _csv(("key", "vid_key", "video_id", "sentence", "temporal"), queries))


def _check_settings(out: Path, settings: Settings) -> None:
    """Refuse to mix videos made with other settings into ``out``; record the settings otherwise."""
    path = out / "synthetic.json"
    if path.exists():
        existing = Settings(**json.loads(path.read_text(encoding="utf-8")))
        if existing != settings:
            raise ValueError(
                f"{out} holds a synthetic benchmark made with {existing}, not {settings}; use another --out"
            )
    else:
        _write_text(path, json.dumps(dataclasses.asdict(settings), sort_keys=True) + "\n")


def generate(
    out: str | Path,
    videos: int,
    seed: int = 0,
    *,
    size: int = 112,
    fps: int = 10,
    workers: int = 1,
    progress_every: int = 100,
) -> Report:
    """Write (or complete) the benchmark in ``out``; existing videos are kept, annotations rewritten.

    ``workers`` > 1 renders and encodes in that many processes; a progress line is logged every
    ``progress_every`` new videos.
    """
    if videos < 1 or size < 16 or size % 2 or fps < 1 or workers < 1:
        raise ValueError("need videos >= 1, an even size >= 16, fps >= 1 and workers >= 1")
    began = time.perf_counter()
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    settings = Settings(seed, size, fps)
    _check_settings(out, settings)
    planned = plan(videos, seed)
    jobs = [(video.scene, out / "videos" / f"{video.video_id}.mp4") for video in planned]
    jobs = [(scene, path) for scene, path in jobs if not path.exists()]
    make = partial(_make_video, size=size, fps=fps)
    # One worker renders in this process: no start-up cost, and tracebacks stay readable.
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        made = pool.map(make, jobs, chunksize=8) if pool else map(make, jobs)
        for done, _ in enumerate(made, start=1):
            if done % progress_every == 0 or done == len(jobs):
                rate = done / (time.perf_counter() - began)
                log.info("%s: %d/%d new videos written (%.1f videos/s)", out, done, len(jobs), rate)
    write_annotations(out, planned, settings)
    return Report(out, len(jobs), len(planned) - len(jobs), time.perf_counter() - began)


def ensure_synthetic(out: str | Path, videos: int, seed: int = 0) -> Path:
    """The directory of a complete synthetic benchmark, generated (or completed) only where needed."""
    return generate(out, videos, seed).out


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        prog="python -m centerclip.datasets.synthetic", allow_abbrev=False,
        description="Generate the synthetic text-video retrieval benchmark (cached: re-runs only add what is missing).",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="directory to write videos/ and the annotation files into"
    )
    parser.add_argument("--videos", type=int, required=True, help="number of videos (70%% train, 10%% val, 20%% test)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same benchmark (default 0)"
    )
    parser.add_argument("--size", type=int, default=112, help="frame width and height in pixels, even (default 112)")
    parser.add_argument("--fps", type=int, default=10, help="frames per second (default 10)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes rendering and encoding in parallel (default 1)"
    )
    args = parser.parse_args(argv)
    try:
        report = generate(args.out, args.videos, args.seed, size=args.size, fps=args.fps, workers=args.workers)
    except ValueError as error:  # bad settings, or an --out made with other ones
        parser.error(str(error))
    print(f"{report.out}: {report.written} videos written, {report.skipped} already there, {report.seconds:.1f} s")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
