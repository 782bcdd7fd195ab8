"""Video decoding, frame sampling and moments; CLIP preprocessing (centerclip.media.pixels) re-exported.

``sample_clip`` decodes T frames of one video (or of a [start, end] window of it) and
``sample_moments`` the windows of a long video, at a size whose shortest side is the model's input
size, so no full-resolution frame of a 4K video is ever kept. PyAV decodes first, by a plan that
skips what no sampled frame needs (centerclip.media.readers); decord takes over when PyAV cannot.
``preprocess`` then turns the uint8 frames into the model's normalised input, batched, equal to
open_clip's own transform.

Decoders are C libraries fed untrusted files: they can hang (a named pipe, a stalled network
mount) or crash the process (decord has open segfault reports on corrupt files). The module-level
functions decode in the calling process, for callers that are already isolated (a Ray task whose
crash costs one task). Everyone else uses ``Decoder``, which runs them in a child process with a
hard timeout, so a hang or a crash costs one video and raises ``VideoDecodeError``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable

# PyAV before decord: decord loads its own, older FFmpeg and libvpx with RTLD_GLOBAL, and libvpx
# (unversioned symbols) then shadows PyAV's, whose VP8/VP9 encoders fail ("ABI version mismatch").
import av
import numpy as np
import pyarrow.fs

from .sources import VideoDecodeError, brief, local_file
from .worker import Worker
from .pixels import center_crop, decode_size, model_preprocessing, preprocess
from .readers import INTERPOLATIONS, READERS, UNINDEXED, EndedEarly

# The preprocessing functions live in centerclip.media.pixels and import torch and open_clip when
# called: decoding processes (Ray decoders, the isolated decode worker and its fork server) never
# load them, 300-450 MB each; encoding processes never load decord and PyAV.

__all__ = [
    "Clip", "Decoder", "EXACT", "Limits", "SamplingConfig", "VideoDecodeError", "VideoInfo", "center_crop", "decode_size",
    "model_preprocessing", "moments", "preprocess", "probe", "sample_clip", "sample_indices", "sample_moments",
    "sample_video",
]


@dataclass(frozen=True)
class Limits:
    """What we agree to decode. Frames are downscaled while decoding, so these bound CPU time and
    temporary disk rather than memory: every frame is still decoded at full size first."""

    max_pixels: int = 4096 * 2160  # DCI 4K; an 8K frame costs four times as much to decode
    max_duration: float = 6 * 3600.0  # seconds; longer than any film, shorter than a CCTV dump
    max_bytes: int = 8 << 30  # also bounds the temporary copy of a remote file


# The options that change how frames are decoded (``--decode``), with their types.
DECODE_OPTIONS = {"threads": int, "skip": str, "seek": bool, "snap": str, "max_shift": float, "interpolation": str}
SKIPS = ("none", "unneeded")
SNAPS = ("none", "reference", "keyframe")


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames a clip takes, and how the decoder gets them.

    ``frames`` spread over the window, at ``size`` px shortest side. The rest changes what it
    costs, not which frames are taken, except ``snap`` (centerclip.media.readers; README,
    "Decoding less"; the defaults are what bench_decode.py found fastest at unchanged retrieval):

    - ``threads``: decoder threads per process (0: FFmpeg's choice, one per core). One thread
      costs the fewest CPU-seconds; more only shorten the wall time of one video.
    - ``skip="unneeded"``: the decoder skips every frame no sampled frame depends on (FFmpeg's
      skip_frame: non-reference frames, and whole GOPs between sampled frames); ``"none"``
      decodes every frame.
    - ``seek``: jump over GOPs no sampled frame needs instead of reading through them.
    - ``snap``: take the nearest reference frame (``reference``) or keyframe (``keyframe``)
      instead of the exact one, moved by at most ``max_shift`` of the sampling stride; a frame
      that none is near enough to is decoded exactly.
    - ``interpolation``: FFmpeg's scaler for the kept frames.

    They apply to PyAV, which goes first when any is set; decord (the fallback) decodes every
    frame exactly with its own threads and scaler. ``EXACT`` is the configuration before them.
    """

    frames: int = 12
    size: int = 224  # decoded frames have this shortest side: the model's input size
    max_fps: float | None = None  # sample at most this many distinct frames per second
    backends: tuple[str, ...] = ("pyav", "decord")  # tried in order until one decodes
    limits: Limits = field(default_factory=Limits)
    threads: int = 1
    skip: str = "unneeded"
    seek: bool = True
    snap: str = "none"
    max_shift: float = 0.5  # a fraction of the sampling stride
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.frames < 1 or self.size < 1:
            raise ValueError(f"frames and size must be positive, got {self.frames} and {self.size}")
        if self.max_fps is not None and self.max_fps <= 0:
            raise ValueError(f"max_fps must be positive, got {self.max_fps}")
        unknown = set(self.backends) - set(READERS)
        if unknown or not self.backends:
            raise ValueError(f"backends must be a non-empty subset of {sorted(READERS)}, got {self.backends}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be 0 (FFmpeg's choice) or more, got {self.threads!r}")
        for name, value, allowed in (("skip", self.skip, SKIPS), ("snap", self.snap, SNAPS),
                                     ("interpolation", self.interpolation, tuple(INTERPOLATIONS))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0 <= self.max_shift <= 1:
            raise ValueError(f"max_shift must be between 0 and 1 (of the sampling stride), got {self.max_shift}")

    @property
    def pyav_options(self) -> bool:
        """Whether an option only PyAV follows is set (then PyAV goes first)."""
        return self.skip != "none" or self.seek or self.snap != "none" or self.interpolation != "bicubic"

    @classmethod
    def parse_options(cls, text: str, **values: Any) -> SamplingConfig:
        """``threads=1,skip=unneeded,seek,snap=reference,max_shift=0.5`` (the CLIs' ``--decode``)."""
        types = DECODE_OPTIONS
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name not in types:
                raise ValueError(f"unknown decode option {name!r}; the options are {', '.join(types)}")
            if types[name] is bool:
                if value.lower() not in ("", "1", "true", "yes", "0", "false", "no"):
                    raise ValueError(f"{name} takes no value or true/false, got {value!r}")
                values[name] = value.lower() in ("", "1", "true", "yes")
            else:
                try:
                    values[name] = types[name](value)
                except ValueError:
                    kind = {int: "an integer", float: "a number"}[types[name]]
                    raise ValueError(f"decode option {name} needs {kind}, got {value!r}") from None
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplingConfig:
        limits = values.get("limits", Limits())
        if isinstance(limits, dict):
            limits = Limits(**limits)
        return cls(**{**values, "backends": tuple(values.get("backends", cls.backends)), "limits": limits})


# Decoding as it was before the options: decord first with FFmpeg's threads, every frame, bicubic.
EXACT = SamplingConfig(backends=("decord", "pyav"), threads=0, skip="none", seek=False, interpolation="bicubic")


def decode_options(config: SamplingConfig) -> dict[str, Any]:
    """The DECODE_OPTIONS of ``config``: e.g. ``parse_options(text, **decode_options(EXACT))``
    reads options over the old decoding rather than over the defaults."""
    return {name: getattr(config, name) for name in DECODE_OPTIONS}


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    duration: float  # seconds
    width: int
    height: int
    codec: str


@dataclass(frozen=True, eq=False)
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    mask: np.ndarray  # bool [T]: False where a frame repeats the one before (short videos, fps cap)
    timestamps: np.ndarray  # float64 [T]: seconds from the start of the video
    start: float  # the window sampled, in seconds, clamped to the video
    end: float
    info: VideoInfo  # as decoded: frames that could be read, not what the header claims
    backend: str


# --- Sampling: pure functions of frame counts and seconds ---------------------------------------


def sample_indices(
    n_frames: int, fps: float, count: int, start: float = 0.0, end: float | None = None,
    max_fps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``count`` frames spread uniformly over [start, end) seconds, and which are real.

    The window is cut into as many equal segments as distinct frames can be had (``count``, fewer
    when the window holds fewer frames or ``max_fps`` allows fewer) and the frame at the centre of
    each segment is taken; each is then repeated in place so there are always ``count`` slots.
    The mask is True at the first slot of each distinct frame.
    """
    end = n_frames / fps if end is None else end
    first = min(int(start * fps), n_frames - 1)
    stop = max(first + 1, min(math.ceil(end * fps), n_frames))
    distinct = min(count, stop - first)
    if max_fps is not None:
        # The epsilon keeps 0.7 s x 10 fps = 6.9999999 from losing a frame.
        distinct = min(distinct, max(1, int((end - start) * max_fps + 1e-9)))
    picks = first + ((np.arange(distinct) + 0.5) * (stop - first) / distinct).astype(np.int64)
    slots = np.arange(count) * distinct // count
    return picks[slots], np.r_[True, slots[1:] != slots[:-1]]


def moments(duration: float, length: float, stride: float) -> list[tuple[float, float]]:
    """Windows of ``length`` seconds every ``stride`` seconds covering [0, duration]; the last one
    is cut at the end of the video, and a video shorter than ``length`` is one window."""
    if length <= 0 or stride <= 0:
        raise ValueError(f"length and stride must be positive, got {length} and {stride}")
    windows = [(0.0, min(length, duration))]
    while windows[-1][1] < duration and len(windows) * stride < duration:
        start = len(windows) * stride  # not a running sum, so starts carry no rounding drift
        windows.append((start, min(start + length, duration)))
    return windows


# --- Decoding -----------------------------------------------------------------------------------


def _probe_local(path: str) -> VideoInfo:
    """Read the container header only: cheap, and it works for codecs decord lacks."""
    return _probe_header(path)[0]


def _probe_header(path: str) -> tuple[VideoInfo, str, int]:
    """The header's VideoInfo, the container format's name, and the number of frames its index
    lists (MP4, MOV; 0 where the container keeps no count)."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"cannot decode: {brief(error)}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        frames = stream.frames or round(duration * fps)
        context = stream.codec_context
        info = VideoInfo(frames, fps, duration, context.width, context.height, stream.codec.canonical_name)
        return info, container.format.name, stream.frames or 0


# Top-level box types of ISO/IEC 14496-12 files. Bytes after the last real box (padding, or a
# file that is also something else) are not boxes: walking stops at the first unknown type.
_TOP_LEVEL_BOXES = {b"ftyp", b"moov", b"mdat", b"moof", b"mfra", b"free", b"skip", b"wide", b"uuid", b"meta",
                    b"sidx", b"styp", b"pdin", b"emsg", b"prft", b"ssix"}


def _mp4_declared_bytes(path: str, size: int) -> int:
    """Where the last top-level box of an MP4/MOV file of ``size`` bytes says it ends (a 32-bit
    size and a type; size 1: a 64-bit size follows; size 0: to the end of the file)."""
    offset = 0
    with open(path, "rb") as file:
        while offset + 8 <= size:
            file.seek(offset)
            head = file.read(16)
            box, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if box == 1 and len(head) == 16:
                box = int.from_bytes(head[8:16], "big")
            if box == 0:
                return size
            if box < 8 or kind not in _TOP_LEVEL_BOXES:  # not a box: the demuxer judges what follows
                return offset
            offset += box
    return offset


def _check_limits(path: str, info: VideoInfo, limits: Limits) -> None:
    if info.width * info.height > limits.max_pixels:
        raise VideoDecodeError(
            path, f"too large: {info.width}x{info.height} exceeds the limit of {limits.max_pixels} pixels")
    if info.duration > limits.max_duration:
        raise VideoDecodeError(path, f"too long: {info.duration:.0f}s exceeds the limit of {limits.max_duration:.0f}s")



Windows = Callable[[float], list[tuple[float, float | None]]]


def _sample(path: str, config: SamplingConfig, windows_for: Windows) -> list[Clip]:
    """Decode the union of the frames of all windows once, then cut it into clips."""
    header, container, listed = _probe_header(path)
    if not header.width or not header.height:
        raise VideoDecodeError(path, "cannot decode: no frame size in the header")
    if "mp4" in container.split(","):
        # An index at the front (faststart) outlives a cut: what is left would decode, and be
        # indexed as if it were the whole video.
        size = os.path.getsize(path)
        declared = _mp4_declared_bytes(path, size)
        if declared > size:
            raise VideoDecodeError(path, f"cut short: the file has {size:,} of the {declared:,} bytes its "
                                         f"boxes declare (its index lists {listed} frames, {header.duration:.1f} s); a copy "
                                         "or upload still being written? It is tried again once it changes")
    _check_limits(path, header, config.limits)
    width, height = decode_size(header.width, header.height, config.size)
    # PyAV first where decord returns wrong frames (UNINDEXED) and where only PyAV has the options.
    pyav_first = container in UNINDEXED or config.pyav_options
    backends = sorted(config.backends, key=lambda name: pyav_first and name != "pyav")
    failures = []
    for name in backends:
        try:
            reader = READERS[name](path, width, height, config)
            info = replace(header, frames=reader.frames, fps=reader.fps)
            try:
                plan = _plan(path, info, config, windows_for)
                decoded, used = reader.read(*plan[-2:])
            except EndedEarly as short:
                # Sample within the frames that do decode.
                plan = _plan(path, replace(info, frames=short.decoded), config, windows_for)
                decoded, used = reader.read(*plan[-2:])
            info, windows, plans, unique, _ = plan
        except VideoDecodeError:
            raise
        except Exception as error:  # noqa: BLE001 - any decoder failure means: try the next one
            failures.append(f"{name}: {brief(error)}")
            continue
        clips = []
        for (start, end), (indices, mask) in zip(windows, plans):
            slots = np.searchsorted(unique, indices)
            taken = used[slots]  # the frames really handed over: a snap may have moved them
            clips.append(Clip(decoded[slots], mask & np.r_[True, taken[1:] != taken[:-1]], taken / info.fps,
                              min(start, info.duration), end, info, name))
        return clips
    raise VideoDecodeError(path, "cannot decode: " + "; ".join(failures))


def _plan(path: str, info: VideoInfo, config: SamplingConfig, windows_for: Windows):
    """(info with its duration, windows, (indices, mask) per window, the frames to decode, and
    how far a snap may move each: ``max_shift`` of the smallest sampling stride that takes it)."""
    if info.frames < 1 or not info.fps > 0:
        raise RuntimeError(f"{info.frames} frames at {info.fps} fps")
    info = replace(info, duration=info.frames / info.fps)
    _check_limits(path, info, config.limits)
    windows = [(start, info.duration if end is None else min(end, info.duration))
               for start, end in windows_for(info.duration)]
    plans = [sample_indices(info.frames, info.fps, config.frames, start, end, config.max_fps)
             for start, end in windows]
    unique = np.unique(np.concatenate([indices for indices, _ in plans]))
    bounds = np.full(len(unique), np.iinfo(np.int64).max)
    for (start, end), (indices, mask) in zip(windows, plans):
        stride = (end - start) * info.fps / mask.sum()
        slots = np.searchsorted(unique, indices)
        bounds[slots] = np.minimum(bounds[slots], int(config.max_shift * stride))
    return info, windows, plans, unique, bounds

def _check_window(start: float | None, end: float | None) -> None:
    if (start or 0.0) < 0 or (end is not None and end <= (start or 0.0)):
        raise ValueError(f"window [{start}, {end}] must satisfy 0 <= start < end")


def probe(path: str | os.PathLike, *, filesystem: pyarrow.fs.FileSystem | None = None) -> VideoInfo:
    """Frame count, fps, duration, size and codec from the container header (no decoding; the
    frame count is estimated from duration x fps where the container does not store it)."""
    with local_file(path, filesystem, Limits.max_bytes) as local:
        return _probe_local(local)


def sample_clip(path: str | os.PathLike, config: SamplingConfig = SamplingConfig(),
                start: float | None = None, end: float | None = None, *,
                filesystem: pyarrow.fs.FileSystem | None = None) -> Clip:
    """``config.frames`` frames spread over the video, or over [start, end] seconds of it, decoded
    in this process. Raises VideoDecodeError for a video that cannot be used."""
    _check_window(start, end)
    with local_file(path, filesystem, config.limits.max_bytes) as local:
        return _sample(local, config, lambda duration: [(start or 0.0, end)])[0]


def sample_moments(path: str | os.PathLike, config: SamplingConfig, length: float, stride: float, *,
                   filesystem: pyarrow.fs.FileSystem | None = None) -> list[Clip]:
    """One clip per window of ``moments(duration, length, stride)``, from a single decoding pass."""
    moments(1.0, length, stride)  # validates before any decoding
    with local_file(path, filesystem, config.limits.max_bytes) as local:
        return _sample(local, config, lambda duration: moments(duration, length, stride))


def sample_video(path: str | os.PathLike, config: SamplingConfig, length: float, stride: float,
                 moments_after: float, *, filesystem: pyarrow.fs.FileSystem | None = None) -> list[Clip]:
    """The whole video's clip, then, for a video of at least ``moments_after`` seconds, one clip
    per window of ``moments(duration, length, stride)``: all from a single decoding pass."""
    moments(1.0, length, stride)

    def windows(duration: float) -> list[tuple[float, float | None]]:
        return [(0.0, None)] + (moments(duration, length, stride) if duration >= moments_after else [])

    with local_file(path, filesystem, config.limits.max_bytes) as local:
        return _sample(local, config, windows)


class Decoder(Worker):
    """``probe``, ``sample_clip`` and ``sample_moments`` in a worker process with a hard timeout
    (see ``Worker``): a video that hangs or crashes the decoder raises VideoDecodeError, and the
    next video gets a fresh worker. ``Decoder(isolated=False)`` decodes in this process."""

    def probe(self, path, *, filesystem=None) -> VideoInfo:
        with local_file(path, filesystem, Limits.max_bytes) as local:
            return self.call(path, _probe_local, local)

    def sample_clip(self, path, config: SamplingConfig = SamplingConfig(), start: float | None = None,
                    end: float | None = None, *, filesystem=None) -> Clip:
        # This process copies remote files, so a killed worker leaves no temporary file behind.
        with local_file(path, filesystem, config.limits.max_bytes) as local:
            return self.call(path, sample_clip, local, config, start, end)

    def sample_moments(self, path, config: SamplingConfig, length: float, stride: float, *,
                       filesystem=None) -> list[Clip]:
        with local_file(path, filesystem, config.limits.max_bytes) as local:
            return self.call(path, sample_moments, local, config, length, stride)

    def sample_video(self, path, config: SamplingConfig, length: float, stride: float, moments_after: float, *,
                     filesystem=None) -> list[Clip]:
        with local_file(path, filesystem, config.limits.max_bytes) as local:
            return self.call(path, sample_video, local, config, length, stride, moments_after)
