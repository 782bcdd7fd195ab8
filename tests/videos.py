"""Test videos written with PyAV.

Frame i shows the bits of i as black and white vertical stripes (least significant on the left),
so a decoded frame says which frame it is whatever the codec, the decode size and the colour
conversion: tests check sampling order and windows on real decoded pixels.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 8  # stripes: up to 256 distinguishable frames


def can_encode(codec: str) -> bool:
    try:
        av.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - PyAV raises different errors for unknown and decode-only codecs
        return False
    return True


def stripes(index: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: the bits of ``index`` as stripes."""
    bits = (index >> np.arange(BITS)) & 1
    row = (bits[np.arange(width) * BITS // width] * 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(row[None, :, None], (height, width, 3)))


def frame_index(frame: np.ndarray) -> int:
    """The index a decoded frame [H, W, 3] shows, read at the centre of each stripe."""
    centres = ((np.arange(BITS) + 0.5) * frame.shape[1] / BITS).astype(int)
    bits = frame[:, centres].mean(axis=(0, 2)) > 127
    return int((bits << np.arange(BITS)).sum())


def write_video(path: Path, *, codec: str = "libx264", frames: int = 30, fps: int = 10, width: int = 64,
                height: int = 48, container: str | None = None, repeat_every: int = 0, damage_after: int | None = None,
                pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
    """A video of ``frames`` striped frames. ``repeat_every`` n: every n-th frame is written as a
    zero-size packet, which means "the frame before, again" (Theora's way; NUT keeps such packets).
    ``damage_after`` n: packets after the n-th carry zeros instead of coded data (a damaged tail
    that demuxes but does not decode). ``options`` go to the encoder (e.g. x264's ``g``, ``bf``)."""
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, fps)
        written = 0
        for index in range(frames):
            if repeat_every and index % repeat_every == repeat_every - 1:
                repeat = av.Packet(b"")
                repeat.stream, repeat.time_base, repeat.pts, repeat.dts = stream, Fraction(1, fps), index, index
                output.mux(repeat)
                continue
            frame = av.VideoFrame.from_ndarray(stripes(index, width, height), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                written += 1
                if damage_after is not None and written > damage_after:
                    damaged = av.Packet(bytes(packet.size))
                    damaged.stream, damaged.time_base = stream, packet.time_base
                    damaged.pts, damaged.dts = packet.pts, packet.dts
                    packet = damaged
                output.mux(packet)
        output.mux(stream.encode())
    return path


def write_audio(path: Path, seconds: float = 1.0) -> Path:
    rate = 16000
    with av.open(str(path), "w") as output:
        stream = output.add_stream("aac", rate=rate)
        samples = np.sin(np.arange(int(rate * seconds)) / 10).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def truncate(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target
