"""k-medoids kernel at the paper's setting against the published iteration written plainly.

64 segments x 147 tokens (3 frames x 49 patches) x 768 dims, K = 49, up to 100 iterations, on
random tokens and on redundant ones (3 near-identical frames + noise). The baseline is the
published algorithm as a per-segment, per-cluster loop (``published_kmedoids``); the last column
counts the segments where both choose the same medoids (they must: all of them). Each run happens in a fresh
subprocess so its peak memory is its own: on GPU torch's peak allocation; on CPU the peak resident
set above the resident set before the call, with glibc made to return every freed block of 64 KiB
or more to the OS (so RSS follows live tensors) and the kernel's high-water mark reset first.
Times come from a separate child with the default allocator. The last line prints the ratios.

    python benchmarks/bench_clustering.py [--device cuda] [--repeats 5]
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
def published_kmedoids(x: torch.Tensor, k: int, max_iter: int = 100) -> torch.Tensor:
    """The published k-medoids iteration written the straightforward way, from its description:
    one segment at a time, one cluster at a time. KKZ seeding (largest norm first, then the token
    farthest from its nearest chosen centre); assign every token to its nearest medoid (the first
    listed on ties; a medoid to its own cluster); in every cluster the new medoid is the member with
    the smallest sum of distances to the other members, the lowest index on exact ties; stop when no
    medoid moves or after ``max_iter`` updates. Only the distance matrix is shared with ours (exact
    zero diagonal, exactly symmetric); sums are float64, so exact ties are real ties."""
    all_distances = clustering.pairwise_distances(x)
    results = []
    for tokens, dist in zip(x, all_distances):
        medoids = [int(tokens.norm(dim=-1).argmax())]
        while len(medoids) < k:
            to_nearest = dist[:, medoids].min(1).values
            to_nearest[medoids] = -1.0
            medoids.append(int(to_nearest.argmax()))
        for _ in range(max_iter):
            assign = dist[:, medoids].argmin(1)
            assign[medoids] = torch.arange(k)
            moved = []
            for cluster in range(k):
                members = (assign == cluster).nonzero().flatten()
                sums = dist[members][:, members].double().sum(1)
                moved.append(int(members[sums.argmin()]))  # argmin: the first, i.e. lowest index, on ties
            if moved == medoids:
                break
            medoids = moved
        results.append(sorted(medoids))
    return torch.tensor(results, device=x.device)


IMPLEMENTATIONS = {
    "centerclip": lambda x: clustering.kmedoids(x, K, max_iter=100)[1],
    "published": lambda x: published_kmedoids(x, K, max_iter=100),
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


def measure(implementation: str, kind: str, device: str, repeats: int) -> dict:
    """Run in this process: time (median of repeats after a warm-up) and peak memory."""
    x = tokens(kind, device)
    run = IMPLEMENTATIONS[implementation]

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


def in_subprocess(implementation: str, kind: str, device: str, repeats: int) -> dict:
    """Memory from a child whose freed blocks go back to the OS; time from one with glibc's usual
    allocator, since returning every block makes each new tensor fault its pages in again."""
    def child(extra_env: dict) -> dict:
        output = subprocess.run(
            [sys.executable, __file__, "--child", implementation, kind, "--device", device, "--repeats", str(repeats)],
            check=True, capture_output=True, text=True, env={**os.environ, **extra_env},
        ).stdout
        return json.loads(output.strip().splitlines()[-1])

    timed, measured = child({}), child({"MALLOC_MMAP_THRESHOLD_": "65536"})
    return {**measured, "seconds": timed["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--child", nargs=2, metavar=("IMPLEMENTATION", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.device, args.repeats)))
        return

    print(f"k-medoids, {SEGMENTS} segments x {FRAMES * PATCHES} tokens x {DIM} dims, K={K}, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")
    speedups, memory_ratios = [], []
    for kind in ("random", "redundant"):
        ours = in_subprocess("centerclip", kind, args.device, args.repeats)
        baseline = in_subprocess("published", kind, args.device, args.repeats)
        same = sum(a == b for a, b in zip(ours["centres"], baseline["centres"]))
        speedup = baseline["seconds"] / ours["seconds"]
        memory = baseline["peak_bytes"] / max(ours["peak_bytes"], 1)
        speedups.append(speedup)
        memory_ratios.append(memory)
        print(f"{kind:9s}  centerclip {ours['seconds'] * 1e3:8.1f} ms {ours['peak_bytes'] / 2**20:8.1f} MiB   "
              f"published loop {baseline['seconds'] * 1e3:8.1f} ms {baseline['peak_bytes'] / 2**20:8.1f} MiB   "
              f"speed-up {speedup:5.1f}x  memory {memory:5.1f}x less  identical medoids {same}/{SEGMENTS} segments")
    print(f"ratios: speed-up {min(speedups):.1f}x, peak memory {min(memory_ratios):.1f}x less (worst of random/redundant)")


if __name__ == "__main__":
    main()
