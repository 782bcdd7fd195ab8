"""Calibrate "is a copy": the cosine of whole-video embeddings above which two videos are copies.

    python benchmarks/bench_duplicates.py [--videos 200]

Originals: the first --videos videos of a held-out synthetic set (seed 1, never trained on). Each
gets four copies, written here with PyAV: a re-encode (libx264 crf 35), a trim (the first and last
15% cut), a resize (to 160x160) and all three at once. Every video is decoded as the indexer does
(SamplingConfig's defaults) and embedded with the built-in model. Pairs of one original's family
are copies; pairs across families are not, and the temporal twins among them (the same frames in
reverse, or two events swapped) are counted apart: they are the hardest distinct videos. Prints
precision and recall of "cosine >= t is a copy" for a range of t: the measurement a threshold for
folding copies in search (issue 28) has to come from. With the built-in model no threshold works
(RESULTS.md, "Copies"): its whole-video embedding averages the frames, so a twin embeds like the
original, and so do distinct videos of the same things moving another way.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from centerclip.datasets.synthetic import ensure_synthetic  # noqa: E402
from centerclip.media.decoding import Decoder, SamplingConfig, center_crop  # noqa: E402
from centerclip.model.encoder import EncoderConfig, VideoEncoder  # noqa: E402

THRESHOLDS = (0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995)


def copy(source: Path, target: Path, *, crf: int = 18, trim: float = 0.0, size: int | None = None) -> Path:
    if target.is_file():
        return target
    with av.open(str(source)) as given:
        frames = [frame.to_ndarray(format="rgb24") for frame in given.decode(video=0)]
        rate = int(given.streams.video[0].average_rate)
    cut = int(len(frames) * trim)
    frames = frames[cut:len(frames) - cut]
    with av.open(str(target), "w") as written:
        stream = written.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "veryfast"})
        stream.width = stream.height = size or frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for number, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
                width=stream.width, height=stream.height, format="yuv420p")
            frame.pts, frame.time_base = number, Fraction(1, rate)
            written.mux(stream.encode(frame))
        written.mux(stream.encode())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200, help="originals (each with four copies)")
    parser.add_argument("--cache", default=".cache/centerclip/duplicates", help="where the videos are written")
    parser.add_argument("--out", default="benchmarks/results/duplicates.json", help="where the figures go")
    args = parser.parse_args()
    cache = Path(args.cache)
    source = ensure_synthetic(cache / "synthetic-seed1", args.videos, seed=1)
    described = {video["video_id"]: video for video in json.loads((source / "MSRVTT_data.json").read_text())["videos"]}
    copies = cache / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    families = []
    for index in range(args.videos):
        original = source / "videos" / f"video{index}.mp4"
        families.append([original,
                         copy(original, copies / f"video{index}-crf35.mp4", crf=35),
                         copy(original, copies / f"video{index}-trim.mp4", trim=0.15),
                         copy(original, copies / f"video{index}-160.mp4", size=160),
                         copy(original, copies / f"video{index}-all.mp4", crf=35, trim=0.15, size=160)])
    encoder = VideoEncoder.create(EncoderConfig()).eval()
    sampling = SamplingConfig(frames=encoder.frames, size=encoder.image_size[0])
    vectors = []
    with Decoder() as decoder, torch.inference_mode():
        for family in families:
            frames = np.stack([center_crop(decoder.sample_clip(path, sampling).frames, sampling.size) for path in family])
            vectors.append(encoder.encode_video(encoder.preprocess(torch.from_numpy(frames))).float().numpy())
    vectors = np.concatenate(vectors)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    family = np.repeat(np.arange(args.videos), 5)
    cosine = vectors @ vectors.T
    upper = np.triu(np.ones_like(cosine, dtype=bool), 1)
    same = (family[:, None] == family[None, :]) & upper
    twin_of = {index: described[f"video{index}"].get("twin") for index in range(args.videos)}
    twins = np.array([[twin_of[a] == f"video{b}" or twin_of[b] == f"video{a}" for b in family] for a in family]) & upper
    different = ~(family[:, None] == family[None, :]) & upper
    rows = []
    for threshold in THRESHOLDS:
        called = cosine >= threshold
        true = (called & same).sum()
        rows.append({"threshold": threshold, "precision": float(true / max(1, (called & upper).sum())),
                     "recall": float(true / same.sum()), "twins_called_copies": float((called & twins).sum() / max(1, twins.sum()))})
    summary = {"videos": args.videos, "copy_pairs": int(same.sum()), "distinct_pairs": int(different.sum()),
               "twin_pairs": int(twins.sum()), "copy_cosine": {"min": float(cosine[same].min()), "median": float(np.median(cosine[same]))},
               "distinct_cosine": {"max": float(cosine[different].max()), "median": float(np.median(cosine[different]))},
               "twin_cosine": {"max": float(cosine[twins].max()) if twins.any() else None,
                               "median": float(np.median(cosine[twins])) if twins.any() else None},
               "by_threshold": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({key: value for key, value in summary.items() if key != "by_threshold"}, indent=1))
    print("| cosine >= | precision | recall | twins called copies |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['threshold']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['twins_called_copies']:.3f} |")


if __name__ == "__main__":
    main()
