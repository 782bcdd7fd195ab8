"""Indexing throughput: the Ray Data pipeline (pipelines/index.py) against a single-process loop
(decode -> encode -> write) over the same videos, model and decoder, in the same run.

Both write to a fresh LanceDB table. Ray is started before the clock (a cluster is long-lived);
the pipeline's actor start-up is timed. The last line prints the ratio (Ray / loop, videos/s).

    python benchmarks/bench_index.py [--videos 160] [--encoders 1] [--decoders 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sys.path[0] is benchmarks/; pipelines/ is beside it

import numpy as np  # noqa: E402
import ray  # noqa: E402

from centerclip import VideoEncoder  # noqa: E402
from centerclip.datasets.synthetic import ensure_synthetic  # noqa: E402
from centerclip.indexing import DecodeVideos, EncodeClips, EncodeSettings, MomentConfig, sources_batch  # noqa: E402
from centerclip.listing import list_inputs  # noqa: E402
from centerclip.store import Store  # noqa: E402
from centerclip.video import SamplingConfig  # noqa: E402
from pipelines.index import IndexJob, run, write  # noqa: E402


def single_process(folder: Path, db: str, batch_size: int) -> float:
    """The same stages called in a plain loop, one batch of videos at a time."""
    start = time.perf_counter()
    encoder = VideoEncoder.create()
    store = Store.open(db, dim=encoder.embed_dim)
    sources = list_inputs([str(folder)]).sources
    decode = DecodeVideos(sampling=SamplingConfig(frames=encoder.frames, size=encoder.image_size[0]), moments=MomentConfig())
    encode = EncodeClips(settings=EncodeSettings(encoder=encoder.config()))
    for begin in range(0, len(sources), batch_size):
        batch = sources_batch(sources[begin:begin + batch_size])
        decoded = [decode({name: values[i:i + 1] for name, values in batch.items()}) for i in range(len(batch["uri"]))]
        merged = {name: np.concatenate([d[name] for d in decoded]) for name in decoded[0]}
        write(store, encode(merged))
    decode.decoder.close()
    return len(sources) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=160, help="synthetic videos to index (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per encoder call")
    parser.add_argument("--decoders", type=int, default=1, help="Ray decoder actors")
    parser.add_argument("--encoders", type=int, default=1, help="Ray encoder actors")
    parser.add_argument("--cache", default=".cache/centerclip", help="where the videos are generated")
    args = parser.parse_args()
    folder = ensure_synthetic(Path(args.cache) / f"bench-index-{args.videos}", args.videos, seed=2) / "videos"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as scratch:
        loop = single_process(folder, f"{scratch}/loop", args.batch_size)
        start = time.perf_counter()
        summary = run(IndexJob(inputs=(str(folder),), db=f"{scratch}/ray", batch_size=args.batch_size,
                               decoders=args.decoders, encoders=args.encoders))
        pipeline = summary["videos"] / (time.perf_counter() - start)
    print(f"{args.videos} videos, built-in model, 2 Ray CPUs: single-process loop {loop:.1f} videos/s, "
          f"Ray Data pipeline {pipeline:.1f} videos/s ({args.decoders} decoder, {args.encoders} encoder actors)")
    print(f"ratio: Ray pipeline / single-process loop = {pipeline / loop:.2f}x")


if __name__ == "__main__":
    main()
