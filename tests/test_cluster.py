"""The indexer on a real multi-node Ray cluster (Ray's own ray.cluster_utils: each node a raylet of
its own), shaped as cluster.yaml runs it: a head with no CPU for work, and small worker nodes. One
cluster serves the whole module; each test runs `pipelines/index.py` against it through RAY_ADDRESS,
with default flags, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from centerclip.index.store import Store

REPO = Path(__file__).resolve().parents[1]
# The driver writes slowly (a second after each write): the pipeline runs ahead of it, so work is
# in flight on every node when one is removed, whatever the machine's speed.
SLOW_WRITER = """
import sys, time
from centerclip import cli
from centerclip.commands import index
from centerclip.index import engine
write = engine.write
def slow_write(store, batch):
    counts = write(store, batch)
    time.sleep(1.0)
    return counts
engine.write = slow_write
cli.run(index.main, sys.argv[1:])
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_worker(cluster):
    """A 1-CPU worker node with a temp dir of its own, as a node on its own host has: nodes that
    share one unpack a job's working_dir into the same folder, and one node's clean-up deletes the
    files another node's processes are importing."""
    return cluster.add_node(**cluster.worker_args, temp_dir=tempfile.mkdtemp(prefix="w", dir=cluster.private_temp))


@pytest.fixture(scope="module")
def cluster():
    """A 0-CPU head and two 1-CPU workers on loopback, in a private Ray temp dir: Ray records its
    cluster in RAY_TMPDIR (by default the machine-wide /tmp/ray) and deletes it on shutdown, and
    its socket paths must fit in 107 bytes."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    os.makedirs(f"{temp}/ray")
    saved = {name: os.environ.get(name) for name in ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray from swapping 127.0.0.1 for the host's address.
    os.environ.update(RAY_TMPDIR=temp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    node = {"node_ip_address": "127.0.0.1", "dashboard_agent_listen_port": 0}
    # The head runs the dashboard, as on a cluster of `ray up`: `ray job submit` talks to it.
    head = {"num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}
    made = Cluster(initialize_head=True, head_node_args={**head, **node})
    made.worker_args = {"num_cpus": 1, **node}
    made.private_temp = temp
    for _ in range(2):
        add_worker(made)
    made.wait_for_nodes()
    try:
        yield made
    finally:
        made.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """40 generated videos at 32 px."""
    from centerclip.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("library")
    generate(root, 40, seed=5, size=32)
    return root / "videos"


def index(cluster, *argv: str, script: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    command = [sys.executable, *(script or [str(REPO / "pipelines" / "index.py")]), *argv, "--json"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary_of(job: subprocess.Popen, timeout: float = 400) -> dict:
    out, err = job.communicate(timeout=timeout)
    assert job.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):])


def rows(db: str) -> int:
    try:
        return Store.open(db).count()
    except (ValueError, OSError):  # not created yet
        return 0


def workers(cluster) -> list:
    return [node for node in cluster.list_all_nodes() if node is not cluster.head_node]


def exact(db: str, videos: int) -> None:
    """Every video once: one row each (the clips are shorter than a moment), no error rows."""
    store = Store.open(db)
    ids = store.videos.to_arrow().column("id").to_pylist()
    assert len(ids) == videos and len(set(ids)) == videos
    assert store.errors().num_rows == 0


def test_default_flags_index_on_two_one_cpu_workers_with_both_stages_on_both(cluster, library, tmp_path):
    db = str(tmp_path / "db")
    summary = summary_of(index(cluster, str(library), "--db", db))
    assert summary["found"] == summary["videos"] == 40 and summary["errors"] == 0 and "retried" not in summary
    assert summary["nodes"] == {"decoded_on": 2, "encoded_on": 2}
    exact(db, 40)


def test_a_worker_node_lost_mid_job_costs_a_retry_not_a_row(cluster, library, tmp_path):
    db = str(tmp_path / "db")
    job = index(cluster, str(library), "--db", db, "--batch-size", "1", script=["-c", SLOW_WRITER])
    deadline = time.monotonic() + 300
    while rows(db) < 3:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.2)
    cluster.remove_node(workers(cluster)[-1], allow_graceful=False)
    summary = summary_of(job)
    assert summary["videos"] == 40 and summary["errors"] == 0 and summary["rows_in_table"] == 40
    # Work the lost node held is done again (and said so) unless it had already been delivered.
    if "retried" in summary:
        assert summary["retried"]["videos"] > 0 and summary["retried"]["passes"] >= 2 and summary["retried"]["why"]
    exact(db, 40)
    add_worker(cluster)  # the replacement, for the next test
    cluster.wait_for_nodes()


def test_a_head_alone_starts_and_grows_onto_nodes_added_after_the_start(cluster, library, tmp_path):
    for node in workers(cluster):
        cluster.remove_node(node)
    db = str(tmp_path / "db")
    job = index(cluster, str(library), "--db", db)
    time.sleep(8)  # the driver plans and starts its pools, with nowhere to run them yet
    assert job.poll() is None, job.communicate()[1][-3000:]
    for _ in range(2):  # as an autoscaler would add them
        add_worker(cluster)
    summary = summary_of(job)
    assert summary["videos"] == 40 and summary["errors"] == 0
    assert summary["nodes"]["decoded_on"] >= 1 and summary["nodes"]["encoded_on"] >= 1
    exact(db, 40)


def test_actors_no_node_can_host_stop_the_job_with_one_line_not_a_hang(cluster, library, tmp_path):
    # Encoders of 2 CPUs on 1-CPU nodes: Ray would wait for a node that never comes.
    job = index(cluster, str(library), "--db", str(tmp_path / "db"), "--encoder-cpus", "2", "--stall-minutes", "0.1")
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("index.py: stopped: nothing was indexed for 0.1 min"), err[-3000:]
    assert "each encoder for 2 CPU" in last and "nodes alive: 3 (1 CPU, 1 CPU, 0 CPU)" in last, last
    assert rows(str(tmp_path / "db")) == 0


def test_ray_job_submit_with_the_working_dir_indexes_on_the_workers(cluster, library, tmp_path):
    """`ray job submit --working-dir .`, as the README says: the entrypoint runs on the 0-CPU head,
    the pools on the two workers, and the job's path starts with the submitted copy."""
    ray = str(Path(sys.executable).with_name("ray"))
    dashboard = f"http://{cluster.head_node.address_info['webui_url']}"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    db = str(tmp_path / "db")
    submitted = subprocess.run(
        [ray, "job", "submit", "--address", dashboard, "--working-dir", str(REPO), "--submission-id", "index-on-workers",
         "--", sys.executable, "pipelines/index.py", str(library), "--db", db, "--json"],
        capture_output=True, text=True, timeout=400, env=env)
    status = subprocess.run([ray, "job", "status", "--address", dashboard, "index-on-workers"],
                            capture_output=True, text=True, env=env).stdout
    assert submitted.returncode == 0 and "Job 'index-on-workers' succeeded" in status, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    summary = json.loads(submitted.stdout[submitted.stdout.index('{\n  "'):submitted.stdout.rindex("}") + 1])
    # On the workers (the head has no CPU). Both stages often run on both, but whether the grown
    # encoder pool reaches the second worker within 40 videos is a matter of timing.
    assert summary["videos"] == 40 and summary["errors"] == 0
    assert summary["nodes"]["decoded_on"] >= 1 and summary["nodes"]["encoded_on"] >= 1, summary["nodes"]
    exact(db, 40)
