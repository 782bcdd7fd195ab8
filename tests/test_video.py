"""Decoding, sampling, moments and preprocessing on real files written by PyAV (tests/videos.py).

Every test video shows its frame index as stripes, so sampling order and windows are checked on
decoded pixels. Bad files go through the isolated Decoder, as they would in production.
"""

import os
import pickle
import shutil
import signal
import tempfile
import time
import types
from dataclasses import replace

import av  # noqa: F401 - see centerclip/video.py: PyAV must be loaded before decord
import decord
import numpy as np
import open_clip
import pyarrow.fs
import pytest
import torch
from PIL import Image

from centerclip.media.sources import path_from_uri, uri_from_path
from centerclip.media.decoding import (
    EXACT, Decoder, Limits, SamplingConfig, VideoDecodeError, VideoInfo, decode_size, model_preprocessing, moments, preprocess,
    probe, sample_clip, sample_indices, sample_moments,
)
from videos import can_encode, frame_index, truncate, write_audio, write_video

CONFIG = SamplingConfig(frames=6, size=32)  # 64x48 videos decode to 42x32
DECORD_FIRST = replace(EXACT, frames=6, size=32)  # decoding as before the decode options
GOOD = {  # name: (file, encoder, backend that should decode it when decord goes first)
    "h264": ("h264.mp4", "libx264", "decord"),
    "vp9": ("vp9.webm", "libvpx-vp9", "decord"),
    "mpeg4": ("mpeg4.avi", "mpeg4", "decord"),
    "av1": ("av1.mkv", "libsvtav1", "pyav"),  # decord 0.6 cannot decode AV1
}
ODD_NAMES = ["-leading-dash.mp4", "with spaces.mp4", "ünïcødé 视频.mp4", "$(x);&.mp4", "a:b.mp4"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    files = {name: write_video(root / file, codec=codec) for name, (file, codec, _) in GOOD.items()
             if can_encode(codec)}
    files["long"] = write_video(root / "long.mp4", frames=60)  # 6 s at 10 fps
    files["long_vp9"] = write_video(root / "long.webm", codec="libvpx-vp9", frames=60)
    files["short"] = write_video(root / "short.mp4", frames=5)
    files["one_frame"] = write_video(root / "one_frame.mp4", frames=1)
    files["2x2"] = write_video(root / "2x2.mp4", width=2, height=2)
    return files


@pytest.fixture(scope="module")
def bad(videos, tmp_path_factory):
    """name: (path, the reason VideoDecodeError must start with)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").touch()
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (root / "text.mp4").write_text("this is not a video\n" * 100)
    (root / "directory.mp4").mkdir()
    os.mkfifo(root / "pipe.mp4")
    os.symlink(root / "loop_b.mp4", root / "loop_a.mp4")
    os.symlink(root / "loop_a.mp4", root / "loop_b.mp4")
    os.symlink(root / "missing.mp4", root / "dangling.mp4")
    return {
        "empty": (root / "empty.mp4", "empty file"),
        # PyAV writes the MP4 index at the end, so any truncation loses it.
        "truncated_30": (truncate(videos["long"], root / "t30.mp4", 0.3), "cannot decode"),
        "truncated_90": (truncate(videos["long"], root / "t90.mp4", 0.9), "cannot decode"),
        "random": (root / "random.mp4", "cannot decode"),
        "text": (root / "text.mp4", "cannot decode"),
        "audio_only": (write_audio(root / "audio.m4a"), "no video stream"),
        "directory": (root / "directory.mp4", "not a regular file"),
        "named_pipe": (root / "pipe.mp4", "not a regular file"),
        "symlink_loop": (root / "loop_a.mp4", "symlink loop"),
        "dangling_symlink": (root / "dangling.mp4", "no such file"),
        "missing": (root / "nowhere.mp4", "no such file"),
    }


@pytest.fixture(scope="module")
def decoder(videos):
    with Decoder(timeout=20) as decoder:
        decoder.sample_clip(videos["h264"], CONFIG)  # starts the fork server, outside the timed tests
        yield decoder


def indices_shown(clip):
    return [frame_index(frame) for frame in clip.frames]


# A platform condition, not a test result: PyAV wheels ship AV1 encoders on some builds only.
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.skipif(not can_encode(codec), reason=f"this PyAV build has no {codec} encoder"))
    for name, (_, codec, _) in GOOD.items()])
@pytest.mark.parametrize("first", ["pyav", "decord"])
def test_good_videos_decode_in_order(videos, name, first):
    clip = sample_clip(videos[name], CONFIG if first == "pyav" else DECORD_FIRST)
    assert clip.frames.shape == (6, 32, 42, 3) and clip.frames.dtype == np.uint8
    assert clip.backend == ("pyav" if first == "pyav" else GOOD[name][2])
    # 30 frames in 6 segments of 5: the centre frame of each.
    assert indices_shown(clip) == [2, 7, 12, 17, 22, 27]
    np.testing.assert_allclose(clip.timestamps, [0.2, 0.7, 1.2, 1.7, 2.2, 2.7])
    assert clip.mask.all()
    assert (clip.info.frames, clip.info.fps, clip.info.width, clip.info.height) == (30, 10.0, 64, 48)


def test_pyav_backend_matches_decord(videos):
    by_decord = sample_clip(videos["long"], DECORD_FIRST)
    by_pyav = sample_clip(videos["long"], SamplingConfig(frames=6, size=32, backends=("pyav",)))
    assert by_pyav.backend == "pyav" and indices_shown(by_pyav) == indices_shown(by_decord)
    np.testing.assert_array_equal(by_pyav.timestamps, by_decord.timestamps)


def test_probe_reads_the_header(videos, decoder):
    info = probe(videos["long"])
    assert info == VideoInfo(frames=60, fps=10.0, duration=6.0, width=64, height=48, codec="h264")
    assert decoder.probe(videos["long"]) == info


def test_window_sampling(videos):
    clip = sample_clip(videos["long"], SamplingConfig(frames=4, size=32), start=2.0, end=4.0)
    assert indices_shown(clip) == [22, 27, 32, 37]
    np.testing.assert_allclose(clip.timestamps, [2.2, 2.7, 3.2, 3.7])
    assert (clip.start, clip.end) == (2.0, 4.0)
    for start, end in [(3.0, 2.0), (None, 0.0), (-1.0, None)]:
        with pytest.raises(ValueError):
            sample_clip(videos["long"], CONFIG, start=start, end=end)


def test_window_past_the_end_is_clamped(videos):
    clip = sample_clip(videos["long"], SamplingConfig(frames=4, size=32), start=5.0, end=60.0)
    assert clip.end == 6.0 and indices_shown(clip) == [51, 53, 56, 58]


def test_fps_cap_keeps_t_frames(videos):
    clip = sample_clip(videos["long"], SamplingConfig(frames=12, size=32, max_fps=1.0))
    assert clip.frames.shape[0] == 12 and clip.mask.sum() == 6  # 6 s at 1 fps
    assert indices_shown(clip) == [5, 5, 15, 15, 25, 25, 35, 35, 45, 45, 55, 55]
    assert clip.mask.tolist() == [True, False] * 6


def test_short_video_repeats_frames(videos):
    clip = sample_clip(videos["short"], SamplingConfig(frames=12, size=32))
    assert indices_shown(clip) == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert clip.mask.tolist() == [True, False, False, True, False, True, False, False, True, False, True, False]


def test_one_frame_video(videos):
    clip = sample_clip(videos["one_frame"], CONFIG)
    assert clip.frames.shape == (6, 32, 42, 3) and indices_shown(clip) == [0] * 6
    assert clip.mask.tolist() == [True] + [False] * 5


def test_tiny_video_is_decoded_at_the_model_size(videos):
    # decord fails on such videos without a decode size; we always give one.
    clip = sample_clip(videos["2x2"], CONFIG)
    assert clip.frames.shape == (6, 32, 32, 3) and clip.info.width == 2


def test_truncated_webm_decodes_what_is_there(videos, tmp_path):
    # WebM has no index to lose: a cut file is a shorter video, and both backends agree on it.
    truncated = truncate(videos["long_vp9"], tmp_path / "cut.webm", 0.9)
    clip = sample_clip(truncated, CONFIG)
    assert 30 < clip.info.frames < 60
    assert indices_shown(clip) == np.round(clip.timestamps * 10).astype(int).tolist()
    by_pyav = sample_clip(truncated, SamplingConfig(frames=6, size=32, backends=("pyav",)))
    assert by_pyav.info.frames == clip.info.frames and indices_shown(by_pyav) == indices_shown(clip)


def test_sample_indices():
    indices, mask = sample_indices(100, 25.0, 4)
    assert indices.tolist() == [12, 37, 62, 87] and mask.all()
    indices, mask = sample_indices(100, 25.0, 4, start=1.0, end=2.0)  # frames 25..49
    assert indices.tolist() == [28, 34, 40, 46]
    indices, mask = sample_indices(3, 25.0, 5)
    assert indices.tolist() == [0, 0, 1, 1, 2] and mask.tolist() == [True, False, True, False, True]


def test_moments():
    assert moments(25.0, 10.0, 5.0) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]
    assert moments(27.0, 10.0, 5.0)[-1] == (20.0, 27.0)
    assert moments(3.0, 10.0, 5.0) == [(0.0, 3.0)]
    assert moments(26.0, 5.0, 10.0) == [(0.0, 5.0), (10.0, 15.0), (20.0, 25.0)]  # gaps when stride > length
    with pytest.raises(ValueError):
        moments(10.0, 0.0, 1.0)


def test_sample_moments(videos, decoder):
    config = SamplingConfig(frames=4, size=32)
    clips = sample_moments(videos["long"], config, length=2.0, stride=1.5)
    assert [(clip.start, clip.end) for clip in clips] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (4.5, 6.0)]
    for clip in clips:
        shown = indices_shown(clip)
        assert shown == np.round(clip.timestamps * 10).astype(int).tolist()
        assert all(clip.start * 10 <= index < clip.end * 10 for index in shown)
    isolated = decoder.sample_moments(videos["long"], config, length=2.0, stride=1.5)
    assert [indices_shown(clip) for clip in isolated] == [indices_shown(clip) for clip in clips]


def test_odd_file_names(videos, tmp_path, decoder):
    for name in ODD_NAMES:
        path = tmp_path / name
        shutil.copy(videos["h264"], path)
        assert indices_shown(sample_clip(path, CONFIG)) == [2, 7, 12, 17, 22, 27], name
        assert indices_shown(decoder.sample_clip(str(path), CONFIG)) == [2, 7, 12, 17, 22, 27], name


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", [
    "empty", "truncated_30", "truncated_90", "random", "text", "audio_only", "directory", "named_pipe",
    "symlink_loop", "dangling_symlink", "missing",
])
def test_bad_files_fail_fast_with_a_reason(bad, decoder, name):
    path, reason = bad[name]
    began = time.monotonic()
    with pytest.raises(VideoDecodeError) as caught:
        decoder.sample_clip(path, CONFIG)
    assert time.monotonic() - began < 5.0
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert caught.value.path == str(path) and str(caught.value) == f"{path}: {caught.value.reason}"


def test_limits(videos):
    with pytest.raises(VideoDecodeError, match="too large: 64x48 exceeds the limit of 3071 pixels"):
        sample_clip(videos["h264"], SamplingConfig(limits=Limits(max_pixels=64 * 48 - 1)))
    with pytest.raises(VideoDecodeError, match="too long: 6s exceeds the limit of 5s"):
        sample_clip(videos["long"], SamplingConfig(limits=Limits(max_duration=5.0)))
    with pytest.raises(VideoDecodeError, match="too large: .* bytes exceeds the limit of 100"):
        sample_clip(videos["long"], SamplingConfig(limits=Limits(max_bytes=100)))


@pytest.mark.timeout(30)
def test_a_crash_costs_one_video(videos):
    with Decoder(timeout=20) as decoder:
        assert indices_shown(decoder.sample_clip(videos["h264"], CONFIG)) == [2, 7, 12, 17, 22, 27]
        with pytest.raises(VideoDecodeError, match=r"decoder crashed \(signal 11\)"):
            decoder.call("crash.mp4", signal.raise_signal, signal.SIGSEGV)  # a real segfault in the worker
        assert indices_shown(decoder.sample_clip(videos["h264"], CONFIG)) == [2, 7, 12, 17, 22, 27]


@pytest.mark.timeout(30)
def test_a_hang_times_out(videos, bad):
    pipe, _ = bad["named_pipe"]
    with Decoder(timeout=1.0) as decoder:
        began = time.monotonic()
        with pytest.raises(VideoDecodeError, match=r"timed out after 1s"):
            decoder.call(pipe, decord.VideoReader, str(pipe))  # decord blocks forever opening a pipe
        assert time.monotonic() - began < 5.0
        assert indices_shown(decoder.sample_clip(videos["h264"], CONFIG)) == [2, 7, 12, 17, 22, 27]


def test_errors_of_the_worker_reach_the_caller(videos, decoder):
    with pytest.raises(ValueError):
        decoder.sample_clip(videos["long"], CONFIG, start=-1.0)
    with pytest.raises(ZeroDivisionError):
        decoder.call("x", divmod, 1, 0)


def test_in_process_decoder(videos, bad):
    decoder = Decoder(isolated=False)
    assert indices_shown(decoder.sample_clip(videos["h264"], CONFIG)) == [2, 7, 12, 17, 22, 27]
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        decoder.sample_clip(bad["random"][0], CONFIG)


def test_error_pickles():
    error = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "empty file")))
    assert (error.path, error.reason, str(error)) == ("a.mp4", "empty file", "a.mp4: empty file")


def test_uris_and_pyarrow_filesystems(videos, tmp_path, monkeypatch, decoder):
    expected = [2, 7, 12, 17, 22, 27]
    assert indices_shown(sample_clip(videos["h264"].as_uri(), CONFIG)) == expected
    assert probe(videos["h264"].as_uri()).frames == 30
    # A SubTreeFileSystem is not local to us: the file is copied to a temporary file, then removed.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = pyarrow.fs.SubTreeFileSystem(str(videos["h264"].parent), pyarrow.fs.LocalFileSystem())
    assert indices_shown(sample_clip("h264.mp4", CONFIG, filesystem=store)) == expected
    assert indices_shown(decoder.sample_clip("h264.mp4", CONFIG, filesystem=store)) == expected
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VideoDecodeError, match="^nowhere.mp4: no such file$"):
        sample_clip("nowhere.mp4", CONFIG, filesystem=store)
    with pytest.raises(VideoDecodeError, match="too large"):
        sample_clip("h264.mp4", SamplingConfig(limits=Limits(max_bytes=100)), filesystem=store)
    with pytest.raises(VideoDecodeError, match="cannot open"):
        sample_clip("nosuchscheme://bucket/a.mp4", CONFIG)


def test_config_from_dict():
    config = SamplingConfig.from_dict({"frames": 8, "backends": ["pyav"], "limits": {"max_pixels": 100}})
    assert config == SamplingConfig(frames=8, backends=("pyav",), limits=Limits(max_pixels=100))
    with pytest.raises(ValueError):
        SamplingConfig(backends=("ffmpeg-cli",))


def _images(shape, seed, smooth=True):
    """uint8 images: photo-like smooth blobs with a little noise, or pure noise (sharpest edges)."""
    rng = np.random.default_rng(seed)
    if not smooth:
        return (rng.random(shape) * 255).astype(np.uint8)
    *_, height, width, _ = shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    images = np.zeros(shape, np.float32)
    for _ in range(4):
        centre, colour = rng.random(2), rng.random(3) * 255
        blob = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) * rng.uniform(5, 40))
        images += blob[..., None] * colour
    images += rng.normal(0, 4, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape, size, smooth", [
    ((2, 3, 120, 160, 3), 32, True),  # down, landscape, two batch dimensions
    ((4, 90, 50, 3), 32, True),  # down, portrait
    ((3, 20, 30, 3), 32, True),  # up
    ((2, 32, 42, 3), 32, True),  # already at the decode size: crop only
    ((2, 240, 320, 3), 224, False),  # noise, the worst case for resampling differences
])
def test_preprocess_matches_open_clip(tiny_clip, shape, size, smooth):
    cfg = model_preprocessing(tiny_clip)
    frames = _images(shape, seed=sum(shape), smooth=smooth)
    ours = preprocess(frames, size, cfg["mean"], cfg["std"])
    assert ours.shape == (*shape[:-3], 3, size, size) and ours.dtype == torch.float32
    transform = open_clip.image_transform(size, is_train=False, mean=cfg["mean"], std=cfg["std"])
    theirs = torch.stack([transform(Image.fromarray(image)) for image in frames.reshape(-1, *shape[-3:])])
    difference = (ours.reshape(theirs.shape) - theirs).abs()
    # Measured on these and on 1080p noise: max 0.0150, i.e. one uint8 level (1 / 255 / std), on
    # at most 0.05% of values; mean 1e-6 to 8e-6.
    assert difference.max() < 0.02 and difference.mean() < 1e-4
    channels_first = torch.from_numpy(frames).movedim(-1, -3)
    torch.testing.assert_close(preprocess(channels_first, size, cfg["mean"], cfg["std"]), ours)


def test_decoded_frames_need_only_a_crop(videos, tiny_clip):
    cfg = model_preprocessing(tiny_clip)
    clip = sample_clip(videos["h264"], SamplingConfig(frames=2, size=cfg["size"]))
    assert clip.frames.shape[1:3] == (32, 42) and decode_size(64, 48, 32) == (42, 32)
    assert preprocess(clip.frames, **cfg).shape == (2, 3, 32, 32)


def test_model_preprocessing(tiny_clip):
    cfg = model_preprocessing(tiny_clip)
    assert cfg == {"size": 32, "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}
    assert model_preprocessing(tiny_clip.visual) == cfg
    squash = types.SimpleNamespace(preprocess_cfg={**tiny_clip.visual.preprocess_cfg, "resize_mode": "squash"})
    with pytest.raises(ValueError):
        model_preprocessing(squash)


def test_zero_size_packets_repeat_the_frame_before(tmp_path):
    # Every third frame is an empty packet ("the same frame again", as Theora writes still scenes):
    # decoders refuse such packets, so PyAV's path must read them as repeats and keep the timeline.
    path = write_video(tmp_path / "repeats.nut", codec="mpeg4", frames=30, repeat_every=3)
    clip = sample_clip(path, CONFIG)
    assert clip.backend == "pyav" and clip.info.frames == 30 and clip.info.duration == 3.0
    # Slots 2, 17 are repeats of frames 1, 16.
    assert indices_shown(clip) == [1, 7, 12, 16, 22, 27]


def test_damaged_tail_is_sampled_within_the_frames_that_decode(tmp_path):
    # 30 packets demux but only the first 12 decode: sample those, not frames that do not exist.
    path = write_video(tmp_path / "damaged.mkv", codec="mpeg4", frames=30, damage_after=12)
    clip = sample_clip(path, CONFIG)
    assert clip.info.frames == 12 and clip.info.duration == pytest.approx(1.2)
    assert indices_shown(clip) == [1, 3, 5, 7, 9, 11]


@pytest.mark.parametrize("name, codec, pix_fmt", [
    ("vp8.ogv", "libvpx", "yuv420p"),  # Ogg: this PyAV build has no Theora encoder (decoder only)
    ("vp8.ogg", "libvpx", "yuv420p"),
    ("anim.gif", "gif", "rgb8"),
    ("mpeg2.mpg", "mpeg2video", "yuv420p"),
    ("h264.ts", "libx264", "yuv420p"),
])
def test_other_containers_decode_the_right_frames(tmp_path, name, codec, pix_fmt):
    # MPEG program and transport streams have no index: decord seeks in them to wrong frames.
    clip = sample_clip(write_video(tmp_path / name, codec=codec, pix_fmt=pix_fmt), CONFIG)
    assert indices_shown(clip) == [2, 7, 12, 17, 22, 27] and clip.info.frames == 30


def test_names_that_are_not_utf8_decode_from_their_uri(videos, tmp_path, decoder):
    path = os.fsencode(tmp_path) + b"/bad\xff name.mp4"
    shutil.copy(videos["h264"], path)
    uri = uri_from_path(path)
    assert uri.startswith("file://") and uri.endswith("/bad%FF%20name.mp4")
    assert os.fsencode(path_from_uri(uri)) == path
    assert uri_from_path(videos["h264"]) == str(videos["h264"]) and path_from_uri("s3://b/k.mp4") is None
    assert indices_shown(decoder.sample_clip(uri, CONFIG)) == [2, 7, 12, 17, 22, 27]
    assert indices_shown(sample_clip(os.fsdecode(path), CONFIG)) == [2, 7, 12, 17, 22, 27]


def test_a_faststart_file_cut_short_is_refused_with_what_is_missing(tmp_path):
    """An index at the front survives a cut: the header still lists every frame. What is left must
    not be indexed as the whole video (issue 25): it is an error naming both sizes."""
    written = write_video(tmp_path / "whole.mp4", codec="mpeg4", frames=200, width=160, height=120,
                          options={"b": "4M"})
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(written)) as given, av.open(str(faststart), "w", container_options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(given.streams.video[0])
        for packet in given.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = faststart.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index is at the front
    assert sample_clip(faststart, CONFIG).info.frames == 200
    padded = tmp_path / "padded.mp4"  # bytes after the last box are no box: not a cut
    padded.write_bytes(faststart.read_bytes() + b"<html><script>alert(1)</script></html>\n" * 4)
    assert sample_clip(padded, CONFIG).info.frames == 200
    cut = truncate(faststart, tmp_path / "cut.mp4", 0.4)
    for config in (CONFIG, DECORD_FIRST):
        with pytest.raises(VideoDecodeError, match=rf"cut short: the file has {cut.stat().st_size:,} of the "
                                                   rf"{faststart.stat().st_size:,} bytes its boxes declare \(its index "
                                                   r"lists 200 frames, 20\.0 s\)"):
            sample_clip(cut, config)
