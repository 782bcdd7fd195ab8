"""How frames come out of a file: the decoders behind ``decoding.py``'s sampling.

A reader is built for one file at one output size and answers ``read(targets, bounds)``: the
frames to hand over (presentation order indices) and, per target, how many frames away it may be
taken from (``snap``); it returns uint8 [N, H, W, 3] frames and the index each one really is.

- decord decodes the exact frames; FFmpeg's threads decode, decord's filter graph scales each
  frame it returns.
- PyAV decodes sequentially by default: every frame, each kept one scaled as it passes. With
  ``skip`` or ``snap`` set it decodes by a plan made from the demuxed packets (cheap: no
  decoding), and FFmpeg's ``skip_frame`` drops what no handed-over frame depends on:
  * ``skip="unneeded"``: the frames stay exact. Inside a *run* (from the keyframe before a
    target up to its packet) non-reference frames are skipped unless they are a target
    (``NONREF``, set per packet); between runs, whole GOPs no target needs are skipped (``ALL``),
    or jumped over (``seek=True``).
  * ``snap="reference"``: each target becomes the nearest reference frame (at most
    ``REFERENCE_REACH`` frames and its bound away), so no non-reference frame is ever decoded.
  * ``snap="keyframe"``: a target with a keyframe within its bound becomes that keyframe, which
    decodes alone; the others stay exact.
  A target that no snap reaches is decoded exactly in a second pass. A file whose packets do not
  allow a plan (no timestamps, repeated-frame packets, a frame that does not come out) is decoded
  sequentially instead, so a plan can cost time but never a frame.

Only frames handed over are converted to RGB and scaled, and only after decoding: conversion of a
720p frame to 224 px costs about as much as decoding it (RESULTS.md, "Decoding less").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import av
import decord
import numpy as np

if TYPE_CHECKING:
    from .decoding import SamplingConfig

# A reference frame is never far: encoders put at most a few non-reference B-frames in a row
# (x264: --bframes 3 by default, 16 at most). A target whose nearest reference frame is further
# away is decoded exactly.
REFERENCE_REACH = 4

# Containers without an index: seeking in them goes by timestamps and lands anywhere (MPEG-2
# program streams, MPEG-TS), so decord returns wrong frames there and a plan never seeks.
UNINDEXED = {"mpeg", "mpegts", "mpegvideo"}

# FFmpeg's scaler algorithms (sws flags) by the names SamplingConfig takes.
INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "area": "AREA", "fast_bilinear": "FAST_BILINEAR"}


def _threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """0: FFmpeg's choice (frame and slice threads, one per core); 1: none; n: n threads."""
    if threads == 1:
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads


class DecordReader:
    def __init__(self, path: str, width: int, height: int, config: SamplingConfig):
        self._reader = decord.VideoReader(path, width=width, height=height, num_threads=config.threads)
        self.frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def read(self, targets: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._reader.get_batch(targets.tolist()).asnumpy(), targets


class EndedEarly(Exception):
    """Fewer frames decode than the container holds packets for (a truncated or damaged file)."""

    def __init__(self, decoded: int):
        super().__init__(f"only {decoded} frames decode")
        self.decoded = decoded


class _Unplannable(Exception):
    """The packets or frames do not match the plan: decode sequentially instead."""


@dataclass(frozen=True)
class _Run:
    """Packets [first, last] (decode order) decoded together, from a keyframe on."""

    first: int
    last: int
    keyframe: int  # the presentation index of the frame at ``first``


class PyAVReader:
    """Sequential decoding, or decoding by a plan (see the module's docstring).

    A packet of size zero with a timestamp is a frame that repeats the one before (Theora writes
    them for still scenes, NUT and AVI keep them): it is counted and read as that frame, never
    sent to the decoder, which refuses it ("Invalid argument"). The empty packet without a
    timestamp that ends the stream flushes the decoder."""

    def __init__(self, path: str, width: int, height: int, config: SamplingConfig):
        self._path, self._width, self._height, self._config = path, width, height, config
        self._interpolation = INTERPOLATIONS[config.interpolation]
        with av.open(path) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate or stream.guessed_rate or 0)
            self._seek = config.seek and container.format.name not in UNINDEXED
            # Headers omit the count (WebM) or overstate it (truncated files); demuxing counts the
            # frames actually there without decoding them, as decord does when it opens a file.
            packets = [(packet.pts, packet.is_keyframe, packet.size) for packet in container.demux(stream)
                       if packet.size or packet.pts is not None]
        self.frames = len(packets)
        timestamps = [pts for pts, _, _ in packets]
        self._plannable = (config.skip != "none" or config.snap != "none" or self._seek) and all(
            size for _, _, size in packets) and None not in timestamps and len(set(timestamps)) == len(timestamps)
        if self._plannable:
            self._pts = sorted(timestamps)
            self._index = {pts: index for index, pts in enumerate(self._pts)}
            self._position = np.empty(len(packets), np.int64)  # presentation index -> decode position
            for position, pts in enumerate(timestamps):
                self._position[self._index[pts]] = position
            self._keyframes = np.array(sorted(self._index[pts] for pts, key, _ in packets if key), np.int64)

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        return frame.to_ndarray(width=self._width, height=self._height, format="rgb24",
                                interpolation=self._interpolation)

    def read(self, targets: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._plannable:
            with contextlib.suppress(_Unplannable):  # packets or frames off the plan: decode in order
                return self._read_planned(targets, bounds)
        return self._read_sequential(targets), targets

    # --- Sequential: every frame decoded ---------------------------------------------------------

    def _frames(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        stream = container.streams.video[0]
        _threads(stream, self._config.threads)
        last = None
        for packet in container.demux(stream):
            if not packet.size and packet.pts is not None:
                if last is not None:
                    yield last
                continue
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:  # a damaged packet: the frames around it still decode
                continue
            for last in frames:
                yield last

    def _read_sequential(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self._height, self._width, 3), np.uint8)
        position = decoded = 0
        with av.open(self._path) as container:
            for decoded, frame in enumerate(self._frames(container), 1):
                if decoded - 1 == indices[position]:
                    out[position] = self._convert(frame)
                    position += 1
                    if position == len(indices):
                        return out
            raise EndedEarly(decoded)

    # --- Planned ---------------------------------------------------------------------------------

    def _read_planned(self, targets: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((len(targets), self._height, self._width, 3), np.uint8)
        used = np.full(len(targets), -1, np.int64)
        snap = self._config.snap
        if snap == "reference":
            self._decode(targets, np.minimum(bounds, REFERENCE_REACH), out, used, slots=np.arange(len(targets)))
        else:
            wanted = targets.copy()
            if snap == "keyframe" and len(self._keyframes):
                nearest = _nearest(self._keyframes, targets)
                close = np.abs(nearest - targets) <= bounds
                wanted[close] = nearest[close]
            self._decode(wanted, None, out, used, slots=np.arange(len(targets)))
        missing = np.flatnonzero(used < 0)
        if len(missing):  # beyond every snap's reach, or lost to a seek: exactly, on their own
            self._decode(targets[missing], None, out, used, slots=missing)
        if (used < 0).any():
            raise _Unplannable()
        return out, used

    def _keyframe_before(self, index: int) -> int:
        at = np.searchsorted(self._keyframes, index, side="right") - 1
        return int(self._keyframes[at]) if at >= 0 else 0

    def _runs(self, wanted: np.ndarray, reach: np.ndarray | None) -> list[_Run]:
        """The packets each target needs (from the keyframe before it to the last packet of its
        window, in decode order), merged where they touch."""
        spans = []
        for target, near in zip(wanted.tolist(), [0] * len(wanted) if reach is None else reach.tolist()):
            low, high = max(0, target - near), min(self.frames - 1, target + near)
            keyframe = self._keyframe_before(low)
            spans.append((int(self._position[keyframe]), int(self._position[keyframe:high + 1].max()), keyframe))
        runs: list[_Run] = []
        for first, last, keyframe in sorted(spans):
            if runs and first <= runs[-1].last + 1:
                runs[-1] = _Run(runs[-1].first, max(runs[-1].last, last), runs[-1].keyframe)
            else:
                runs.append(_Run(first, last, keyframe))
        return runs

    def _decode(self, wanted: np.ndarray, reach: np.ndarray | None, out: np.ndarray, used: np.ndarray,
                slots: np.ndarray) -> None:
        """Decode the runs that ``wanted`` needs and fill ``out[slots]``: with ``reach`` None the
        exact frames, else for each the nearest frame decoded within its reach."""
        skip = self._config.skip != "none"
        runs = self._runs(wanted, reach)
        # What the decoder does with the packet at each decode position.
        modes = np.full(self.frames, "ALL" if skip else "DEFAULT", dtype=object)
        for run in runs:
            modes[run.first:run.last + 1] = "NONREF" if skip or reach is not None else "DEFAULT"
        if reach is None:
            modes[self._position[wanted]] = "DEFAULT"
        starts = np.array([run.first for run in runs])
        # After a skipped stretch, frames that come before the run's keyframe (an open GOP's
        # leading pictures) reference what was skipped: they are never handed over.
        after_gap = [number > 0 and (skip or self._seek) and runs[number - 1].last + 1 < run.first
                     for number, run in enumerate(runs)]
        picker = (_Exact(wanted, slots) if reach is None else _Nearest(wanted, reach, slots))

        def take(frame: av.VideoFrame) -> None:
            index = self._index.get(frame.pts)
            if index is None:
                raise _Unplannable()
            run = int(np.searchsorted(starts, self._position[index], side="right")) - 1
            if run >= 0 and not (after_gap[run] and index < runs[run].keyframe):
                hand_over(picker.offer(index, frame))

        def hand_over(choices: list) -> None:
            converted: dict[int, np.ndarray] = {}  # two targets can take one frame (snaps that meet)
            for slot, taken, chosen in choices:
                if taken not in converted:
                    converted[taken] = self._convert(chosen)
                out[slot], used[slot] = converted[taken], taken

        with av.open(self._path) as container:
            stream = container.streams.video[0]
            _threads(stream, self._config.threads)
            context = stream.codec_context
            packets = container.demux(stream)
            sent = -1  # the last decode position sent to the decoder
            for number, run in enumerate(runs):
                if self._seek and number and run.first > sent + 1:
                    for frame in context.decode(None):  # drain: seeking drops the frames in flight
                        take(frame)
                    container.seek(int(self._pts[run.keyframe]), stream=stream, backward=True)
                    packets = container.demux(stream)
                for packet in packets:
                    if packet.pts is None:
                        break
                    if packet.pts not in self._index:
                        raise _Unplannable()
                    position = int(self._position[self._index[packet.pts]])
                    if position <= sent:  # a seek landed before where we were
                        continue
                    sent = position
                    context.skip_frame = modes[position]
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError:
                        continue
                    for frame in frames:
                        take(frame)
                    if position >= run.last:
                        break
            for frame in context.decode(None):
                take(frame)
        hand_over(picker.finish())


class _Exact:
    """Hands over each wanted frame as it comes out of the decoder."""

    def __init__(self, wanted: np.ndarray, slots: np.ndarray):
        self._slots: dict[int, list[int]] = {}
        for slot, target in zip(slots.tolist(), wanted.tolist()):
            self._slots.setdefault(target, []).append(slot)

    def offer(self, index: int, frame: av.VideoFrame) -> list:
        return [(slot, index, frame) for slot in self._slots.get(index, ())]

    def finish(self) -> list:
        return []


class _Nearest:
    """Hands over, for each target, the nearest frame within its reach among those the decoder
    puts out (in presentation order: once a frame passes a target, only it and the frame before
    can be nearest); ties go to the earlier frame. A target none is near enough to gets nothing."""

    def __init__(self, wanted: np.ndarray, reach: np.ndarray, slots: np.ndarray):
        order = np.argsort(wanted, kind="stable")
        self._targets = [(int(wanted[i]), int(reach[i]), int(slots[i])) for i in order]
        self._next = 0
        self._last: tuple[int, av.VideoFrame] | None = None

    def _decide(self, candidate: tuple[int, av.VideoFrame] | None) -> list:
        target, near, slot = self._targets[self._next]
        self._next += 1
        options = [(abs(index - target), index, frame) for index, frame in filter(None, (self._last, candidate))
                   if abs(index - target) <= near]
        if not options:
            return []
        _, index, frame = min(options, key=lambda option: option[:2])
        return [(slot, index, frame)]

    def offer(self, index: int, frame: av.VideoFrame) -> list:
        chosen = []
        while self._next < len(self._targets) and self._targets[self._next][0] <= index:
            chosen += self._decide((index, frame))
        self._last = (index, frame)
        return chosen

    def finish(self) -> list:
        chosen = []
        while self._next < len(self._targets):
            chosen += self._decide(None)
        return chosen


def _nearest(sorted_values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The value of ``sorted_values`` nearest each target (the earlier one on ties)."""
    right = np.clip(np.searchsorted(sorted_values, targets), 0, len(sorted_values) - 1)
    left = np.clip(right - 1, 0, len(sorted_values) - 1)
    return np.where(np.abs(sorted_values[left] - targets) <= np.abs(sorted_values[right] - targets),
                    sorted_values[left], sorted_values[right])


READERS = {"decord": DecordReader, "pyav": PyAVReader}
