"""Vector search latency and recall of the store's ANN index against exact search.

For each size: write N synthetic embeddings through Store.upsert, time LanceDB's exact scan and a
lookup by id, build the indexes with Store.ensure_index, time the lookup again, then for each
(nprobes, refine_rows) time Store.search and measure recall@k against brute force (numpy) on the
same vectors. Queries are fresh draws from the data's distribution, not rows of the table.

Uniform random unit vectors are a poor ANN test (every point is about equally far from every
other, so "nearest" is noise); the data here is clustered like real embeddings: a mixture of
gaussian centres, each point = centre + noise with a decaying (power-law) spectrum in a random
basis, normalised.

    python benchmarks/bench_search.py [--sizes 100000 1000000] [--dim 512] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from centerclip.index.store import KEY_COLUMNS, IndexConfig, Store

BATCH = 50_000


class ClusteredData:
    """Deterministic clustered unit vectors, generated batch by batch (1M x 512 is 2 GB)."""

    def __init__(self, dim: int, centres: int, noise: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.noise, self.seed = dim, noise, seed
        self.centres = _normalise(rng.standard_normal((centres, dim), dtype=np.float32))
        self.basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1, dtype=np.float32))
        self.spectrum = spectrum / np.linalg.norm(spectrum)  # noise has norm ~ `noise`

    def batch(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, index))
        labels = rng.integers(len(self.centres), size=size)
        noise = (rng.standard_normal((size, self.dim), dtype=np.float32) * self.spectrum) @ self.basis
        return _normalise(self.centres[labels] + self.noise * noise)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write(store: Store, data: ClusteredData, size: int, thumbnail: bytes | None = None) -> np.ndarray:
    """``size`` rows of ``data`` as videos with ids ``f"{row:032x}"`` and uris ``synthetic://row``."""
    vectors = np.empty((size, data.dim), np.float32)
    for batch, begin in enumerate(range(0, size, BATCH)):
        chunk = data.batch(batch, min(BATCH, size - begin))
        vectors[begin:begin + len(chunk)] = chunk
        ids = [f"{row:032x}" for row in range(begin, begin + len(chunk))]
        store.upsert({"id": ids, "video_id": ids, "kind": ["video"] * len(ids),
                      "uri": [f"synthetic://{row}" for row in range(begin, begin + len(chunk))],
                      "start": [None] * len(ids), "end": [None] * len(ids), "vector": chunk,
                      "model": ["synthetic"] * len(ids), "schedule": ["none"] * len(ids),
                      "thumbnail": [thumbnail] * len(ids)})
    return vectors


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[str]]:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return [{f"{row:032x}" for row in rows} for rows in top]


def timed_search(store: Store, queries: np.ndarray, k: int, limit: int) -> tuple[list[float], list[set[str]]]:
    """Times searches for ``limit`` rows; recall is judged on the first k of them."""
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        hits = store.search(query, limit)
        times.append(time.perf_counter() - start)
        found.append(set(hits.column("id").to_pylist()[:k]))
    return times, found


def timed_lookups(store: Store, size: int, count: int = 200) -> list[float]:
    """Seconds per lookup of one row by id, as the web page makes one per thumbnail."""
    times = []
    for row in np.random.default_rng(1).integers(size, size=count):
        start = time.perf_counter()
        assert store.has(f"{row:032x}")
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def run(size: int, args: argparse.Namespace, root: str) -> None:
    path = os.path.join(root, f"bench_{size}")
    shutil.rmtree(path, ignore_errors=True)
    data = ClusteredData(args.dim, args.centres, args.noise)
    store = Store.open(path, dim=args.dim)
    start = time.perf_counter()
    vectors = write(store, data, size)
    print(f"\n## {size:,} vectors x {args.dim}: written in {time.perf_counter() - start:.1f} s")
    queries = data.batch(10**9, args.queries)  # a batch index no table reaches
    truth = exact_top(vectors, queries, args.k)

    exact_times, exact_found = timed_search(store, queries[:args.exact_queries], args.k, args.limit)
    exact_recall = statistics.mean(len(f & t) / args.k for f, t in zip(exact_found, truth))
    print(f"exact scan (no index): p50 {percentile(exact_times, 50):.1f} ms, "
          f"p95 {percentile(exact_times, 95):.1f} ms, recall@{args.k} {exact_recall:.3f}")

    scanned = timed_lookups(store, size)

    start = time.perf_counter()
    store = Store(store.videos, store.errors_table, IndexConfig(min_rows=0))
    store.ensure_index()
    config = store.index
    print(f"index IVF_RQ cosine, {max(1, size // config.partition_rows)} partitions, and BTREE on "
          f"{' and '.join(KEY_COLUMNS)}: built in {time.perf_counter() - start:.1f} s")
    indexed = timed_lookups(store, size)
    print(f"lookup of one id: scan p50 {percentile(scanned, 50):.1f} ms, p95 {percentile(scanned, 95):.1f} ms; "
          f"BTREE p50 {percentile(indexed, 50):.1f} ms, p95 {percentile(indexed, 95):.1f} ms "
          f"({percentile(scanned, 50) / percentile(indexed, 50):.1f}x)")
    print(f"| nprobes | refine_rows (refine_factor for {args.limit} rows) | p50 ms | p95 ms | recall@{args.k} |")
    print("| --- | --- | --- | --- | --- |")
    for nprobes in args.nprobes:
        for refine in args.refine_rows:
            store = Store(store.videos, store.errors_table,
                          IndexConfig(min_rows=0, nprobes=nprobes, refine_rows=refine))
            timed_search(store, queries[:20], args.k, args.limit)  # warm the index cache
            times, found = timed_search(store, queries, args.k, args.limit)
            recall = statistics.mean(len(f & t) / args.k for f, t in zip(found, truth))
            print(f"| {nprobes} | {refine} ({-(-refine // args.limit)}) | {percentile(times, 50):.1f} | "
                  f"{percentile(times, 95):.1f} | {recall:.3f} |", flush=True)
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="table sizes to benchmark")
    parser.add_argument("--dim", type=int, default=512, help="vector dimensions")
    parser.add_argument("--centres", type=int, default=4000, help="gaussian centres of the data")
    parser.add_argument("--noise", type=float, default=0.6,
                        help="noise norm relative to a centre's (spread of a cluster)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per setting")
    parser.add_argument("--exact-queries", type=int, default=5, help="queries timed on the exact scan")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (recall@k)")
    parser.add_argument("--limit", type=int, help="rows fetched per query, recall judged on the first k "
                        "(default: k; the search service fetches 8 rows per wanted video, so k=10 fetches 80)")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[20, 40, 80], help="IVF partitions probed")
    parser.add_argument("--refine-rows", type=int, nargs="+", default=[50, 200],
                        help="rows re-ranked on the full vectors (IndexConfig.refine_rows)")
    parser.add_argument("--db", default=None, help="directory for the tables (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the tables afterwards")
    args = parser.parse_args()
    args.limit = args.limit or args.k
    root = args.db or tempfile.mkdtemp(prefix="bench_search_")
    for size in args.sizes:
        run(size, args, root)


if __name__ == "__main__":
    main()
