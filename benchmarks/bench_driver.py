"""The indexer's driver at library scale: memory, listing rate and the first row, for N inputs.

For each N (``--sizes``, default 100k and 1M): a folder of N generated tiny videos (1,000 per
sub-folder) and an N-row CSV manifest of the same files. Each is indexed by `pipelines/index.py` as
a user runs it, in two cases:

- empty store: the run is stopped (SIGINT, as Ctrl-C) once its first row is written and it has
  listed on for ``--after-first`` more seconds; reported: the time from start to the first row;
- every input already indexed (a store written beforehand with a row per file, under the keys the
  listing gives, and its key indexes built): the whole listing is planned against the store and
  nothing is encoded; reported: inputs listed and planned per second.

For every run: the driver's peak RSS (VmHWM of its process, read from /proc until it exits). The
baseline is the run at the smallest N: memory that grows with N is the driver holding inputs. The
last line is
``driver: peak RSS 100k=A MiB 1M=B MiB, growth=(B-A) MiB per 900k inputs, first row after C s``
with A and B the peaks of the run (folder or manifest, empty or indexed store) whose peak grew most
from the smallest N to the largest, and C the slowest first row at the largest N.

    python benchmarks/bench_driver.py [--sizes 100000 1000000] [--out benchmarks/results/driver.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PER_FOLDER = 1000


def label(count: int) -> str:
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"


def tiny_video(path: Path) -> bytes:
    from centerclip.datasets.synthetic import write_video

    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    write_video(frames, path, fps=4)
    return path.read_bytes()


def make_library(root: Path, count: int, video: bytes) -> tuple[Path, Path]:
    """N copies of one tiny video in sub-folders of 1,000, and a manifest naming each."""
    folder = root / "videos"
    paths = []
    for index in range(count):
        sub = folder / f"{index // PER_FOLDER:05d}"
        if index % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        path = sub / f"{index:08d}.mp4"
        path.write_bytes(video)
        paths.append(str(path))
    manifest = root / "manifest.csv"
    manifest.write_text("uri\n" + "\n".join(paths) + "\n")
    return folder, manifest


def write_indexed(db: str, folder: Path) -> float:
    """A store holding a row for every file, keyed as the listing keys them; its indexes built."""
    from centerclip.index.listing import InputStream
    from centerclip.index.store import Store
    from centerclip.model.registry import DEFAULT_MODEL, model_shape

    began = time.perf_counter()
    dim = model_shape(DEFAULT_MODEL).embed_dim
    store = Store.open(db, dim=dim)
    rng = np.random.default_rng(1)
    for sources, _ in InputStream([str(folder)]).chunks(size=65_536):
        count = len(sources)
        vectors = rng.standard_normal((count, dim), dtype=np.float32)
        store.videos.add(store.rows({
            "id": [s.key for s in sources], "video_id": [s.key for s in sources], "kind": ["video"] * count,
            "uri": [s.uri for s in sources], "start": [None] * count, "end": [None] * count, "vector": vectors,
            "model": [DEFAULT_MODEL] * count, "schedule": [""] * count, "thumbnail": [b"\xff\xd8jpeg"] * count}))
    store.ensure_index()
    return time.perf_counter() - began


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rows(db: str) -> int:
    from centerclip.index.store import Store

    try:
        return Store.open(db).count()
    except (OSError, ValueError):
        return 0


def run_index(source: Path, db: str, stop_after_first: float | None) -> dict:
    """One `pipelines/index.py` run; its peak RSS, wall time and (when asked) first-row time."""
    command = [sys.executable, str(ROOT / "pipelines" / "index.py"), str(source), "--db", db, "--json"]
    began = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    peak, first = 0.0, None
    while job.poll() is None:
        peak = max(peak, peak_rss_mib(job.pid) or 0.0)
        if stop_after_first is not None:
            if first is None and rows(db):
                first = time.perf_counter() - began
            if first is not None and time.perf_counter() - began >= first + stop_after_first:
                peak = max(peak, peak_rss_mib(job.pid) or 0.0)
                os.killpg(job.pid, signal.SIGINT)
                break
        time.sleep(0.25)
    out, err = job.communicate(timeout=300)
    seconds = time.perf_counter() - began
    if stop_after_first is None and job.returncode != 0:
        sys.exit(f"index.py failed ({job.returncode}): {err[-2000:]}")
    if stop_after_first is not None and first is None:
        sys.exit(f"index.py wrote no row before it ended ({job.returncode}): {err[-2000:]}")
    result = {"peak_rss_mib": round(peak, 1), "seconds": round(seconds, 2), "returncode": job.returncode}
    if first is not None:
        result["first_row_s"] = round(first, 2)
    if stop_after_first is None:
        summary = json.loads(out[out.index("{"):])
        result |= {"found": summary["found"], "already_indexed": summary["already_indexed"], "videos": summary["videos"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="inputs per library")
    parser.add_argument("--after-first", type=float, default=10.0,
                        help="seconds an empty-store run lists on after its first row before it is stopped")
    parser.add_argument("--scratch", default=None, help="folder for the libraries and stores (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the raw results here as JSON")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results: dict = {"load_at_start": load, "cpus": os.cpu_count(), "sizes": {}}
    scratch = Path(tempfile.mkdtemp(prefix="bench-driver-", dir=args.scratch))
    try:
        video = tiny_video(scratch / "tiny.mp4")
        for count in sorted(args.sizes):
            root = scratch / label(count)
            began = time.perf_counter()
            folder, manifest = make_library(root, count, video)
            print(f"{label(count)}: {count:,} files of {len(video)} bytes written in {time.perf_counter() - began:.0f} s",
                  flush=True)
            indexed = str(root / "indexed.lancedb")
            print(f"{label(count)}: store of {count:,} indexed rows written in {write_indexed(indexed, folder):.0f} s",
                  flush=True)
            runs = {}
            for kind, source in (("folder", folder), ("manifest", manifest)):
                empty = run_index(source, str(root / f"empty-{kind}.lancedb"), stop_after_first=args.after_first)
                full = run_index(source, indexed, stop_after_first=None)
                if full["already_indexed"] != count or full["videos"]:
                    sys.exit(f"the indexed store should hold all {count:,}: {full}")
                full["inputs_per_s"] = round(count / full["seconds"], 1)
                runs[kind] = {"empty": empty, "indexed": full}
                print(f"{label(count)} {kind}: empty store: first row after {empty['first_row_s']:.1f} s, peak RSS "
                      f"{empty['peak_rss_mib']:.0f} MiB; all indexed: {full['seconds']:.1f} s to list and plan "
                      f"({full['inputs_per_s']:,.0f} inputs/s), peak RSS {full['peak_rss_mib']:.0f} MiB", flush=True)
            results["sizes"][label(count)] = {"inputs": count, "runs": runs}
            shutil.rmtree(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_at_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    small, large = min(args.sizes), max(args.sizes)

    def peak(count: int, kind: str, case: str) -> float:
        return results["sizes"][label(count)]["runs"][kind][case]["peak_rss_mib"]

    cases = [(kind, case) for kind in ("folder", "manifest") for case in ("empty", "indexed")]
    for kind, case in cases:
        print(f"{kind}, {case} store: peak RSS {peak(small, kind, case):.0f} MiB at {label(small)}, "
              f"{peak(large, kind, case):.0f} MiB at {label(large)}")
    # The figures of the case whose peak grew most between the two sizes: growth is the same run
    # over more inputs, never one kind of run against another.
    kind, case = max(cases, key=lambda pair: peak(large, *pair) - peak(small, *pair))
    first = max(kind_runs["empty"]["first_row_s"] for kind_runs in results["sizes"][label(large)]["runs"].values())
    print(f"driver: peak RSS {label(small)}={peak(small, kind, case):.0f} MiB {label(large)}={peak(large, kind, case):.0f} MiB, "
          f"growth={peak(large, kind, case) - peak(small, kind, case):.0f} MiB per {label(large - small)} inputs, "
          f"first row after {first:.1f} s")

if __name__ == "__main__":
    main()
