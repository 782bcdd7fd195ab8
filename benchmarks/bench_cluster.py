"""Indexing on a real multi-node Ray cluster (ray.cluster_utils: each node a raylet of its own):
a 0-CPU head with 1, then 2, worker nodes of 1 CPU each, then 2 workers of which one is killed
(remove_node, not graceful) a third of the way through. Each run is `pipelines/index.py` with
default flags through RAY_ADDRESS, on a fresh table, as a user runs it.

Printed per run: wall seconds of the job (the summary's, from listing to the last write), videos/s,
rows (exact: one per video), the passes the job took, and the share of each worker node's CPU in
use (CPU-seconds of the processes under its raylet, each counted up to its last reading, / the
job's wall seconds). Then the ratios:
2 nodes / 1 node, and the seconds a lost node costs (lost run - 2-node run). On one machine two
nodes share its cores, so the ratio is bounded by what the cores give: read it with the CPU shares.
Raw results go to benchmarks/results/cluster-<videos>.json.

    python benchmarks/bench_cluster.py [--videos 120] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # sys.path[0] is benchmarks/; centerclip/ is beside it

from centerclip.datasets.synthetic import generate  # noqa: E402
from centerclip.index.store import Store  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "dashboard_agent_listen_port": 0, "num_cpus": 1}


def cpu_seconds(roots: list[int]) -> dict[int, dict[int, float]]:
    """CPU-seconds (user + system, from one read of /proc) of each process under each root: a
    raylet's workers are its children. Per process, because processes end during a run (a job's
    actors, idle workers Ray lets go): the caller keeps each one's highest reading."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))  # its parent's id
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    trees = {}
    for root in roots:
        tree, found = [root], {}
        while tree:
            current = tree.pop()
            found[current] = used.get(current, 0.0)
            tree.extend(children.get(current, ()))
        trees[root] = found
    return trees


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def run(cluster, workers: list, library: Path, kill_after: float | None) -> dict:
    db = tempfile.mkdtemp(prefix="bench-cluster-db")
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    before = cpu_seconds([raylet_pid(node) for node in workers])
    last = {root: dict(tree) for root, tree in before.items()}
    videos = sum(1 for _ in library.iterdir())
    job = subprocess.Popen([sys.executable, str(REPO / "pipelines" / "index.py"), str(library), "--db", db, "--json"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    while job.poll() is None:
        for root, tree in cpu_seconds(list(last)).items():
            for pid, seconds in tree.items():  # a killed node's, or an ended process's, last reading stands
                last[root][pid] = max(last[root].get(pid, 0.0), seconds)
        if kill_after is not None and killed is None:
            try:
                done = Store.open(db).count()
            except (ValueError, OSError):
                done = 0
            if done >= kill_after * videos:
                killed = time.monotonic()
                cluster.remove_node(workers[-1], allow_graceful=False)
        time.sleep(0.5)
    out, err = job.communicate()
    if job.returncode:
        raise SystemExit(f"bench_cluster: the job failed: {err[-2000:]}")
    summary = json.loads(out[out.index("{"):])
    shutil.rmtree(db, ignore_errors=True)
    shares = [round(sum(seconds - before[root].get(pid, 0.0) for pid, seconds in last[root].items()) / summary["seconds"], 2)
              for root in before]
    return {"workers": len(workers), "killed": killed is not None, "seconds": summary["seconds"],
            "videos_per_s": summary["videos_per_s"], "rows": summary["rows_in_table"], "videos": videos,
            "passes": summary.get("retried", {}).get("passes", 1), "retried": summary.get("retried", {}).get("videos", 0),
            "nodes": summary.get("nodes"), "cpu_share_per_node": shares}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=120, help="generated videos (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each shape (default: %(default)s)")
    args = parser.parse_args()
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths cap at 107 bytes
    os.makedirs(f"{temp}/ray")
    os.environ.update(RAY_TMPDIR=temp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    from ray.cluster_utils import Cluster

    generate(Path(temp) / "lib", args.videos, seed=7, size=32)
    library = Path(temp) / "lib" / "videos"
    print(f"load before: {os.getloadavg()}", flush=True)
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    results = []
    try:
        workers = [cluster.add_node(**NODE)]
        cluster.wait_for_nodes()
        for _ in range(args.repeats):
            results.append(run(cluster, workers, library, None))
            print(results[-1], flush=True)
        workers.append(cluster.add_node(**NODE))
        cluster.wait_for_nodes()
        for _ in range(args.repeats):
            results.append(run(cluster, workers, library, None))
            print(results[-1], flush=True)
        for _ in range(args.repeats):
            results.append(run(cluster, workers, library, 1 / 3))
            print(results[-1], flush=True)
            workers[-1] = cluster.add_node(**NODE)  # the replacement, for the next repeat
            cluster.wait_for_nodes()
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    one = [r["videos_per_s"] for r in results if r["workers"] == 1]
    two = [r for r in results if r["workers"] == 2 and not r["killed"]]
    lost = [r for r in results if r["killed"]]
    ratio = sorted(r["videos_per_s"] for r in two)[len(two) // 2] / sorted(one)[len(one) // 2]
    cost = sorted(r["seconds"] for r in lost)[len(lost) // 2] - sorted(r["seconds"] for r in two)[len(two) // 2]
    print(f"load after: {os.getloadavg()}")
    print(f"2 nodes / 1 node: {ratio:.2f}x videos/s; a node lost a third of the way costs {cost:+.1f} s")
    out = REPO / "benchmarks" / "results" / f"cluster-{args.videos}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"videos": args.videos, "runs": results, "ratio": round(ratio, 2),
                               "lost_node_cost_s": round(cost, 1), "cpus": os.cpu_count()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
