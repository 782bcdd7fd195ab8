"""k-medoids kernel at the paper's setting against the published iteration written plainly.

64 segments x 147 tokens (3 frames x 49 patches) x 768 dims, K = 49, up to 100 iterations, on
random tokens and on redundant ones (3 near-identical frames + noise). The baseline is the
published algorithm written the straightforward way, on the full [B, K, N, N] tensor as the
official code does it (``published_kmedoids``, which shares no code with centerclip); the last
column counts the segments where both choose the same medoids. With ``--official DIR`` (a checkout
of mzhaoshuai/CenterCLIP) the official function itself is run too and counted the same way. Each run happens in a fresh
subprocess so its peak memory is its own: on GPU torch's peak allocation; on CPU the peak resident
set above the resident set before the call, with glibc made to return every freed block of 64 KiB
or more to the OS (so RSS follows live tensors) and the kernel's high-water mark reset first.
Times come from a separate child with the default allocator. The last line prints the ratios.

    python benchmarks/bench_clustering.py [--device cuda] [--repeats 5] [--official ../CenterCLIP]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from centerclip.model import clustering

SEGMENTS, FRAMES, PATCHES, DIM, K = 64, 3, 49, 768, 49


def tokens(kind: str, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "random":
        x = torch.randn(SEGMENTS, FRAMES * PATCHES, DIM, generator=generator)
    else:
        frame = torch.randn(SEGMENTS, 1, PATCHES, DIM, generator=generator)
        x = (frame + 0.05 * torch.randn(SEGMENTS, FRAMES, PATCHES, DIM, generator=generator)).flatten(1, 2)
    return x.to(device)


@torch.no_grad()
def published_kmedoids(x: torch.Tensor, k: int, max_iter: int = 100, threshold: float = 1e-5,
                       chunk: int = 16) -> torch.Tensor:
    """The published k-medoids (mzhaoshuai/CenterCLIP, modules/cluster/fast_kmeans.py) written the
    straightforward way, from its steps and not from our kernel: nothing of centerclip is used.
    Per chunk of 16 segments: torch.cdist's matrix, shifted below zero by the chunk's largest
    distance + 1 and by 1 more on the diagonal; KKZ seeding one segment at a time (largest norm,
    then the token farthest from its nearest seed, read along the seeds' rows); then, until the
    chunk's mean medoid shift is below ``threshold`` or ``max_iter`` updates: every token to the
    medoid whose row is smallest (the first on ties), and in every cluster the member whose float32
    row sum over the cluster, taken on the full [B, K, N, N] masked tensor, is smallest (the first).
    Returns [B, K] medoids in ascending order."""
    results = []
    for part in x.float().split(chunk):
        segments, n, _ = part.shape
        dist = torch.cdist(part, part)
        dist = dist - dist.max() - 1.0
        every = torch.arange(n)
        dist[:, every, every] -= 1.0
        medoids = torch.empty(segments, k, dtype=torch.long, device=x.device)
        for s in range(segments):
            seeds = [int(part[s].norm(dim=-1).argmax())]
            while len(seeds) < k:
                seeds.append(int(dist[s, seeds].min(0).values.argmax()))
            medoids[s] = torch.tensor(seeds)
        cluster_ids = torch.arange(k, device=x.device).view(1, k, 1)
        for _ in range(max_iter):
            before = medoids
            assign = torch.stack([dist[s, before[s]] for s in range(segments)]).argmin(1)  # [B, N]
            member = assign[:, None, :] == cluster_ids  # [B, K, N]
            sums = (dist[:, None] * (member[..., :, None] & member[..., None, :])).sum(-1)  # [B, K, N, N] -> [B, K, N]
            medoids = sums.argmin(-1)
            moved = torch.stack([(part[s, medoids[s]] - part[s, before[s]]).norm(dim=-1).sum() for s in range(segments)])
            if moved.mean() < threshold:
                break
        results.append(medoids.sort(-1).values)
    return torch.cat(results)


def official_kmedoids(checkout: str):
    """The official function itself, from a checkout of mzhaoshuai/CenterCLIP, called as its
    TokenClusterInter calls it for ViT-B/32 (params.py defaults: 100 iterations, threshold 1e-5)."""
    sys.path.insert(0, os.path.join(checkout, "modules"))
    from cluster.fast_kmeans import batch_fast_kmedoids_with_split  # noqa: E402  (only there)

    return lambda x: batch_fast_kmedoids_with_split(x, K, threshold=1e-5, iter_limit=100, split_size=16)[1]


IMPLEMENTATIONS = {
    "centerclip": lambda official: (lambda x: clustering.kmedoids(x, K, max_iter=100)[1]),
    "published": lambda official: (lambda x: published_kmedoids(x, K, max_iter=100)),
    "official": official_kmedoids,
}


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak_resident() -> int:
    """Release freed heap to the OS, reset the kernel's peak-RSS mark (Linux >= 4.0); return RSS bytes."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_kib("VmRSS") * 1024


def measure(implementation: str, kind: str, device: str, repeats: int, official: str | None) -> dict:
    """Run in this process: time (median of repeats after a warm-up) and peak memory."""
    x = tokens(kind, device)
    run = IMPLEMENTATIONS[implementation](official)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    resident_before = reset_peak_resident()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    centres = run(x)
    sync()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - allocated_before
    else:
        peak = status_kib("VmHWM") * 1024 - resident_before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        sync()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_bytes": peak, "centres": centres.cpu().tolist()}


def in_subprocess(implementation: str, kind: str, device: str, repeats: int, official: str | None) -> dict:
    """Memory from a child whose freed blocks go back to the OS; time from one with glibc's usual
    allocator, since returning every block makes each new tensor fault its pages in again."""
    def child(extra_env: dict) -> dict:
        output = subprocess.run(
            [sys.executable, __file__, "--child", implementation, kind, "--device", device, "--repeats", str(repeats)]
            + (["--official", official] if official else []),
            check=True, capture_output=True, text=True, env={**os.environ, **extra_env},
        ).stdout
        return json.loads(output.strip().splitlines()[-1])

    timed, measured = child({}), child({"MALLOC_MMAP_THRESHOLD_": "65536"})
    return {**measured, "seconds": timed["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--official", metavar="DIR", help="a checkout of mzhaoshuai/CenterCLIP: run its k-medoids too")
    parser.add_argument("--child", nargs=2, metavar=("IMPLEMENTATION", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.device, args.repeats, args.official)))
        return

    print(f"k-medoids, {SEGMENTS} segments x {FRAMES * PATCHES} tokens x {DIM} dims, K={K}, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")
    speedups, memory_ratios = [], []
    for kind in ("random", "redundant"):
        ours = in_subprocess("centerclip", kind, args.device, args.repeats, args.official)
        baseline = in_subprocess("published", kind, args.device, args.repeats, args.official)
        same = sum(a == b for a, b in zip(ours["centres"], baseline["centres"]))
        if args.official:
            official = in_subprocess("official", kind, args.device, args.repeats, args.official)
            print(f"{kind:9s}  official code {official['seconds'] * 1e3:8.1f} ms {official['peak_bytes'] / 2**20:8.1f} MiB   "
                  f"identical medoids: centerclip {sum(a == b for a, b in zip(ours['centres'], official['centres']))}"
                  f"/{SEGMENTS}, straightforward {sum(a == b for a, b in zip(baseline['centres'], official['centres']))}"
                  f"/{SEGMENTS} segments")
        speedup = baseline["seconds"] / ours["seconds"]
        memory = baseline["peak_bytes"] / max(ours["peak_bytes"], 1)
        speedups.append(speedup)
        memory_ratios.append(memory)
        print(f"{kind:9s}  centerclip {ours['seconds'] * 1e3:8.1f} ms {ours['peak_bytes'] / 2**20:8.1f} MiB   "
              f"straightforward {baseline['seconds'] * 1e3:8.1f} ms {baseline['peak_bytes'] / 2**20:8.1f} MiB   "
              f"speed-up {speedup:5.1f}x  memory {memory:5.1f}x less  identical medoids {same}/{SEGMENTS} segments")
    print(f"ratios: speed-up {min(speedups):.1f}x, peak memory {min(memory_ratios):.1f}x less (worst of random/redundant)")


if __name__ == "__main__":
    main()
