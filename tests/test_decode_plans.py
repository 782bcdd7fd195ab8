"""Decoding less (SamplingConfig's skip, seek, snap, threads, interpolation) on real files with
B-frames and short GOPs: exact options hand over exactly the frames the default does, snapped
ones move each frame only to a frame of the promised kind and within the promised bound, and
files a plan cannot follow still decode every frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from centerclip.media.decoding import (
    EXACT, Decoder, SamplingConfig, decode_options, sample_clip, sample_indices, sample_video,
)
from videos import frame_index, write_video

# x264 with B-frames (a pyramid: some B-frames are references) and a keyframe every 24 frames.
GOP = 24
X264 = {"g": str(GOP), "bf": "3", "preset": "medium", "sc_threshold": "0"}
EXACT_OPTIONS = ["threads=1", "skip=unneeded", "skip=unneeded,seek", "skip=unneeded,threads=1", "seek",
         "snap=keyframe,max_shift=0", "snap=reference,max_shift=0", "skip=unneeded,seek,snap=keyframe,max_shift=0"]


# Every frame in order, bicubic: what each option is compared with (options given override it).
SEQUENTIAL = decode_options(EXACT)


def config(options: str, **values) -> SamplingConfig:
    return SamplingConfig.parse_options(options, **{"frames": 12, "size": 48, **SEQUENTIAL, **values})


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """25 s at 10 fps: three 10 s moments, keyframes every 2.4 s, B-frames between P-frames."""
    return write_video(tmp_path_factory.mktemp("plans") / "gop.mp4", frames=250, fps=10, width=64, height=48,
                       options=X264)


def kinds(path) -> tuple[set[int], set[int]]:
    """The frame indices of the keyframes and of the reference frames, read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        order = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
    index = {pts: i for i, pts in enumerate(order)}
    found = []
    for skip in ("NONKEY", "NONREF"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = skip
            found.append({index[frame.pts] for frame in container.decode(stream)})
    return found[0], found[1]


def shown(clip) -> list[int]:
    return [frame_index(frame) for frame in clip.frames]


def test_the_video_has_what_the_plans_act_on(gop_video):
    keyframes, references = kinds(gop_video)
    assert len(keyframes) == 11 and 100 < len(references) < 200  # some frames are not references


@pytest.mark.parametrize("options", EXACT_OPTIONS)
def test_exact_options_hand_over_the_same_frames(gop_video, options):
    reference = sample_video(gop_video, config("", backends=("pyav",)), 10, 10, 20)
    clips = sample_video(gop_video, config(options, backends=("pyav",)), 10, 10, 20)
    assert len(clips) == len(reference) == 4
    for clip, expected in zip(clips, reference):
        np.testing.assert_array_equal(clip.frames, expected.frames)
        np.testing.assert_array_equal(clip.timestamps, expected.timestamps)
        np.testing.assert_array_equal(clip.mask, expected.mask)
        assert shown(clip) == list(np.round(clip.timestamps * 10).astype(int))


@pytest.mark.parametrize("snap", ["reference", "keyframe"])
@pytest.mark.parametrize("seek", [False, True])
def test_snapped_frames_are_of_their_kind_within_the_bound(gop_video, snap, seek):
    keyframes, references = kinds(gop_video)
    sampling = config(f"skip=unneeded,snap={snap}", seek=seek)
    clips = sample_video(gop_video, sampling, 10, 10, 20)
    moved = 0
    for clip in clips:
        exact, _ = sample_indices(250, 10.0, 12, clip.start, clip.end)
        taken = np.round(clip.timestamps * 10).astype(int)
        assert shown(clip) == taken.tolist()  # the timestamps say which frame was handed over
        stride = (clip.end - clip.start) * 10 / 12
        assert (np.abs(taken - exact) <= 0.5 * stride).all()
        shifted = taken != exact
        kind = references if snap == "reference" else keyframes
        assert all(int(index) in kind for index in taken[shifted])
        if snap == "reference":  # every frame handed over is a reference frame
            assert set(taken.tolist()) <= references
        moved += shifted.sum()
    assert moved > 0


def test_a_whole_video_clip_snaps_to_keyframes_within_half_its_stride(gop_video):
    clip = sample_clip(gop_video, config("skip=unneeded,seek,snap=keyframe"))
    taken = np.round(clip.timestamps * 10).astype(int)
    keyframes, _ = kinds(gop_video)
    exact = sample_indices(250, 10.0, 12)[0]
    # Half the stride of 250 / 12 frames is 10: a frame with a keyframe that near takes it (the
    # nearest), the others (frame 156, 12 from 144 and 168) stay exact.
    near = [min(keyframes, key=lambda key: (abs(key - index), key)) for index in exact]
    expected = [key if abs(key - index) <= 10 else index for key, index in zip(near, exact)]
    assert taken.tolist() == expected and expected != exact.tolist()


def test_snaps_that_would_meet_count_once(tmp_path):
    """Two sampled frames snapped to one keyframe: the second slot is a repeat (mask False)."""
    path = write_video(tmp_path / "g10.mp4", frames=40, fps=10, width=64, height=48,
                       options={**X264, "g": "10"})
    clip = sample_clip(path, config("skip=unneeded,snap=keyframe,max_shift=1", frames=8))
    taken = np.round(clip.timestamps * 10).astype(int)
    assert kinds(path)[0] == {0, 10, 20, 30}
    # Sampled 2, 7, 12, ... 37 with a bound of 5 frames: 7 and 12 both take 10; 37 stays.
    assert taken.tolist() == [0, 10, 10, 20, 20, 30, 30, 37]
    np.testing.assert_array_equal(clip.mask, np.r_[True, taken[1:] != taken[:-1]])


@pytest.mark.parametrize("options", ["skip=unneeded", "skip=unneeded,seek,snap=keyframe", "snap=reference"])
def test_files_a_plan_cannot_follow_still_decode_every_frame(tmp_path, options):
    repeats = write_video(tmp_path / "repeats.nut", codec="mpeg4", container="nut", frames=30, repeat_every=3)
    clip = sample_clip(repeats, config(options, frames=10, size=48))
    assert shown(clip) == [index - (index % 3 == 2) for index in sample_indices(30, 10.0, 10)[0]]
    damaged = write_video(tmp_path / "damaged.mp4", frames=60, damage_after=30, options=X264)
    clip = sample_clip(damaged, config(options, frames=6))
    assert clip.info.frames < 60 and len(clip.frames) == 6


@pytest.mark.parametrize("container", ["mpegts", "matroska"])
def test_other_containers_follow_the_plan_or_decode_in_order(tmp_path, container):
    path = write_video(tmp_path / f"gop.{container}", frames=120, container=container, options=X264)
    exact = sample_video(path, config("", backends=("pyav",)), 4, 4, 8)
    for options in ("skip=unneeded,seek", "skip=unneeded,seek,snap=keyframe,max_shift=0"):
        clips = sample_video(path, config(options), 4, 4, 8)
        for clip, expected in zip(clips, exact):
            assert shown(clip) == shown(expected)


def test_planned_decoding_runs_in_the_isolated_worker(gop_video):
    with Decoder() as decoder:
        clip = decoder.sample_clip(gop_video, config("skip=unneeded,seek,snap=keyframe"))
    in_process = sample_clip(gop_video, config("skip=unneeded,seek,snap=keyframe"))
    np.testing.assert_array_equal(clip.frames, in_process.frames)
    assert (clip.timestamps != sample_indices(250, 10.0, 12)[0] / 10).any()


def test_decode_options_parse_and_explain_their_errors():
    sampling = SamplingConfig.parse_options("threads=1, skip=unneeded,seek,snap=reference,max_shift=0.25", frames=8)
    assert (sampling.threads, sampling.skip, sampling.seek, sampling.snap, sampling.max_shift, sampling.frames) == \
        (1, "unneeded", True, "reference", 0.25, 8)
    assert SamplingConfig.parse_options("seek=false").seek is False and SamplingConfig.parse_options("") == SamplingConfig()
    for text, message in (("speed=2", "unknown decode option 'speed'"), ("threads=two", "threads needs an integer"),
                          ("snap=scene", "snap must be one of none, reference, keyframe"),
                          ("max_shift=2", "max_shift must be between 0 and 1"), ("seek=maybe", "seek takes no value"),
                          ("threads=-1", "threads must be 0")):
        with pytest.raises(ValueError, match=message):
            SamplingConfig.parse_options(text)
    assert SamplingConfig.from_dict({"snap": "keyframe", "seek": True}).snap == "keyframe"


def test_the_default_decodes_the_exact_frames_with_pyav(gop_video):
    """The default (bench_decode.py's fastest at unchanged retrieval) skips what no sampled frame
    needs and scales bilinearly: the same frames as every-frame decoding, a different scaler."""
    default = sample_video(gop_video, SamplingConfig(frames=12, size=48), 10, 10, 20)
    bilinear = sample_video(gop_video, config("interpolation=bilinear"), 10, 10, 20)
    for clip, expected in zip(default, bilinear):
        assert clip.backend == "pyav"
        np.testing.assert_array_equal(clip.frames, expected.frames)
        np.testing.assert_array_equal(clip.timestamps, expected.timestamps)


def test_threads_one_decodes_the_same_frames_with_decord(gop_video):
    one = sample_clip(gop_video, config("threads=1", backends=("decord",)))
    default = sample_clip(gop_video, config("", backends=("decord",)))
    np.testing.assert_array_equal(one.frames, default.frames)
    assert one.backend == "decord"


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """tests/data/city-cc0.mpg (real footage, MPEG-2, no index) and the same packets in MP4."""
    source = Path(__file__).parent / "data" / "city-cc0.mpg"
    remuxed = tmp_path_factory.mktemp("camera") / "city.mp4"
    with av.open(str(source)) as given, av.open(str(remuxed), "w") as written:
        stream = written.add_stream_from_template(given.streams.video[0])
        for packet in given.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                written.mux(packet)
    return {"mpeg": source, "mp4": remuxed}


@pytest.mark.parametrize("container", ["mpeg", "mp4"])
def test_real_footage_gives_the_same_frames_planned_or_not(camera, container):
    every_frame = sample_clip(camera[container], config("interpolation=bilinear", frames=8, size=64))
    default = sample_clip(camera[container], SamplingConfig(frames=8, size=64))
    np.testing.assert_array_equal(default.frames, every_frame.frames)
    np.testing.assert_array_equal(default.timestamps, every_frame.timestamps)
    assert default.info.frames == 84 and default.frames.shape == (8, 64, 113, 3)
    keyframes, _ = kinds(camera[container])
    snapped = sample_clip(camera[container], config("skip=unneeded,seek,snap=keyframe", frames=8, size=64))
    taken = np.round(snapped.timestamps * 25).astype(int)
    exact = np.round(every_frame.timestamps * 25).astype(int)
    assert (np.abs(taken - exact) <= 0.5 * 84 / 8).all() and set(taken[taken != exact].tolist()) <= keyframes
    assert (taken != exact).any()
