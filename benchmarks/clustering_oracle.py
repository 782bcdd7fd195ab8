"""Freeze the official CenterCLIP clustering's outputs as test data (tests/data/clustering_oracle.npz).

Runs wherever a checkout of the official code (github.com/mzhaoshuai/CenterCLIP) is present; the
tests then compare our defaults with these outputs without it. Inputs, each [segments, 147, D]
(3 frames x 49 patches, K = 49, the paper's ViT-B/32 setting):

- ``random``: standard normal tokens, 768-d (stored as float16 values, so they are exact in float32);
- ``redundant``: 3 near-identical frames, one frame + 0.05 x noise, 768-d (tie-dominated);
- ``model``: the built-in tiny model's tokens after block 3 (where ``kmedoids@3:4x49`` clusters),
  from frames of the synthetic benchmark's first videos, 3 consecutive sampled frames per segment.

Outputs, as the official TokenClusterInter calls its functions with params.py's defaults for
ViT-B/32 (iter_limit 100, threshold 1e-5, split_size 16, euclidean, p 2; spectral: HeatKernel,
sigma 2, svd_correct_sign 1): ``<input>_kmedoids`` and ``<input>_spectral`` [segments, 49] medoid
indices, ascending, and ``<input>_spectral_assign``. ``<input>_spectral_floor``: the official
spectral code against itself on the tokens scaled by 1 + 2^-22, per segment, identical selection
(0/1) and adjusted Rand index: the rounding floor no re-implementation can be held above.
``torch_threads``: the CPU threads it ran with. The SVD's rounding depends on them (on model tokens
the official spectral code itself keeps 4/32 selections at 1 thread against 2), so the tests run
with the same count.

    python benchmarks/clustering_oracle.py --official /path/to/CenterCLIP [--out tests/data/clustering_oracle.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

SEGMENTS, FRAMES, PATCHES, K = 16, 3, 49, 49


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI of two labelings (Hubert and Arabie), from their contingency table."""
    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), pairs(np.array([len(a)]))
    expected = rows * cols / total
    best = (rows + cols) / 2
    return 1.0 if best == expected else (index - expected) / (best - expected)


def model_tokens(segments: int) -> torch.Tensor:
    from centerclip.datasets.synthetic import render
    from centerclip.datasets.synthetic_scenes import plan
    from centerclip.model.encoder import VideoEncoder

    encoder = VideoEncoder.create()
    visual = encoder.visual
    captured = []
    handle = visual.transformer.resblocks[2].register_forward_hook(lambda module, inputs, output: captured.append(output))
    videos = plan((segments + 3) // 4, seed=0)
    frames = []
    for video in videos:
        clip = render(video.scene, 112, 10)
        frames.append(torch.from_numpy(clip[np.linspace(0, len(clip) - 1, 12).round().astype(int)]))
    with torch.no_grad():
        visual(encoder.preprocess(torch.stack(frames)).flatten(0, 1))
    handle.remove()
    tokens = captured[0] if getattr(visual.transformer, "batch_first", False) else captured[0].transpose(0, 1)
    patches = tokens[:, 1:].float()  # [videos * 12, 49, D], CLS dropped as the official code does
    return patches.reshape(-1, FRAMES * PATCHES, patches.shape[-1])[:segments].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="a checkout of mzhaoshuai/CenterCLIP")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "clustering_oracle.npz"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(args.official, "modules"))
    warnings.filterwarnings("ignore", category=FutureWarning)  # the official code's torch.cuda.amp decorators
    from cluster.fast_kmeans import batch_fast_kmedoids_with_split
    from cluster.spectral import batch_spectral_clustering

    def official_kmedoids(x):
        return batch_fast_kmedoids_with_split(x, K, distance="euclidean", threshold=1e-5, iter_limit=100,
                                              id_sort=True, norm_p=2.0, split_size=16)

    def official_spectral(x):
        return batch_spectral_clustering(x, K, mode="HeatKernel", knn_k=5 * FRAMES, metric="euclidean", threshold=1e-5,
                                         iter_limit=100, id_sort=True, norm_p=2.0, correct_sign=True, split_size=16,
                                         sigma=2.0)

    generator = torch.Generator().manual_seed(26)
    frame = torch.randn(SEGMENTS, 1, PATCHES, 768, generator=generator)
    inputs = {
        "random": torch.randn(SEGMENTS, FRAMES * PATCHES, 768, generator=generator).half().float(),
        "redundant": (frame + 0.05 * torch.randn(SEGMENTS, FRAMES, PATCHES, 768, generator=generator)).flatten(1, 2).half().float(),
        "model": model_tokens(2 * SEGMENTS),
    }
    arrays = {"torch_threads": np.array(torch.get_num_threads())}
    for name, x in inputs.items():
        arrays[name] = x.half().numpy() if name != "model" else x.numpy()
        arrays[f"{name}_kmedoids"] = official_kmedoids(x)[1].numpy()
        assign, medoids = official_spectral(x)
        arrays[f"{name}_spectral"], arrays[f"{name}_spectral_assign"] = medoids.numpy(), assign.numpy()
        scaled_assign, scaled = official_spectral(x * (1 + 2**-22))
        same = (scaled == medoids).all(1).numpy()
        ari = np.array([adjusted_rand_index(a, b) for a, b in zip(assign.numpy(), scaled_assign.numpy())])
        arrays[f"{name}_spectral_floor"] = np.stack([same.astype(float), ari])
        print(f"{name}: {tuple(x.shape)}; official spectral against itself x (1 + 2^-22): "
              f"{int(same.sum())}/{len(x)} identical, mean ARI {ari.mean():.3f}")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
