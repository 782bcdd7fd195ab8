"""The built-in default job's inputs: a generated sample set, held out from the built-in model's
training data (another seed), with the captions to search it by."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .job import IndexJob

# The sample set's clips last 4-8 s: moments of 3 s for those of 6 s or more show what moments
# are (real collections get the defaults: 10 s windows of videos of 20 s or more).
SAMPLE_MOMENTS = {"length": 3.0, "stride": 3.0, "min_duration": 6.0}


@dataclass(frozen=True)
class Sample:
    """The generated sample set, a caption of one of its videos to search for, and every caption
    with its video's file name (to measure the search on all of them)."""

    inputs: tuple[str, ...]
    query: str
    expected: str
    captions: tuple[tuple[str, str], ...]


def sample_inputs(job: IndexJob) -> Sample:
    """The sample set of ``job.sample_videos`` videos under ``job.cache``, generated if not there."""
    from ..datasets.synthetic import ensure_synthetic

    root = ensure_synthetic(Path(job.cache) / "sample", job.sample_videos, seed=1)
    annotations = json.loads((root / "MSRVTT_data.json").read_text())
    # A caption whose video has no temporal twin: a twin differing only in motion direction or
    # event order is the benchmark's hard case, not the demo's (a small set may have none other).
    plain = {video["video_id"] for video in annotations["videos"] if not video.get("temporal")}
    sentence = next((s for s in annotations["sentences"] if s["video_id"] in plain), annotations["sentences"][0])
    captions = tuple((s["caption"], f"{s['video_id']}.mp4") for s in annotations["sentences"])
    return Sample((str(root / "videos"),), sentence["caption"], f"{sentence['video_id']}.mp4", captions)
