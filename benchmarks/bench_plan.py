"""A re-run with nothing to do, at library scale: the indexer's plan() over N indexed videos.

A table of ``--videos`` indexed videos (bench_search.py's rows, each with a thumbnail, as the
indexer writes them) and a listing of the same files, built directly (the files themselves are not
needed: a listing is uris and keys). plan() then finds every listed video indexed and nothing to do; it
looks every listed uri and key up. Timed with the lookups as IN-list queries of IN_CHUNK keys (the
baseline: ``IndexConfig(lookup_scan_share=inf)``) and as the store does them by default (a lookup of
many keys reads the column once), first without indexes on the key columns, then after
Store.ensure_index has made them (BTREE on id and uri, with the ANN index). The last line is the
ratio of the two with the indexes.

    python benchmarks/bench_plan.py [--videos 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sys.path[0] is benchmarks/; centerclip/ is beside it

from bench_search import ClusteredData, write  # noqa: E402
from centerclip.index.listing import Listing, Source  # noqa: E402
from centerclip.index.store import IN_CHUNK, KEY_COLUMNS, IndexConfig, Store  # noqa: E402
from centerclip.index.planning import plan  # noqa: E402


def timed_plans(store: Store, listing: Listing, repeats: int, label: str) -> float:
    """The median seconds of ``repeats`` plans, printed with each time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work = plan(store, listing.sources, [], retry_errors=False)
        times.append(time.perf_counter() - start)
        if work.todo or work.indexed != len(listing.sources):
            sys.exit(f"plan found {len(work.todo)} to do and {work.indexed} indexed, not 0 and {len(listing.sources)}")
    print(f"plan, {label}: median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})", flush=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000, help="indexed videos (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed plans per setting; medians are reported")
    parser.add_argument("--dim", type=int, default=128, help="vector size (default: the built-in model's, %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = Store.open(f"{scratch}/db", dim=args.dim)
        in_lists = Store(store.videos, store.errors_table, IndexConfig(lookup_scan_share=float("inf")))
        start = time.perf_counter()
        write(store, ClusteredData(args.dim, centres=64, noise=0.3), args.videos, thumbnail=b"\xff\xd8 a thumbnail")
        listing = Listing(sources=[Source(f"synthetic://{row}", f"{row:032x}") for row in range(args.videos)])
        print(f"{args.videos:,} indexed videos written in {time.perf_counter() - start:.1f} s")
        timed_plans(in_lists, listing, args.repeats, f"IN lists of {IN_CHUNK:,} keys, no key indexes")
        timed_plans(store, listing, args.repeats, "the default lookups, no key indexes")
        start = time.perf_counter()
        store.ensure_index()
        print(f"ANN index and BTREE on {' and '.join(KEY_COLUMNS)}: built in {time.perf_counter() - start:.1f} s")
        baseline = timed_plans(in_lists, listing, args.repeats, f"IN lists of {IN_CHUNK:,} keys, BTREE indexes")
        default = timed_plans(store, listing, args.repeats, "the default lookups, BTREE indexes")
    print(f"ratio: plan with IN-list lookups / with the default lookups, {args.videos:,} videos, "
          f"BTREE indexes = {baseline / default:.2f}x")


if __name__ == "__main__":
    main()
