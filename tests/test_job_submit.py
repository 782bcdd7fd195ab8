"""`ray job submit --working-dir . -- python pipelines/index.py ...` against a real head node."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from centerclip.store import Store

REPO = Path(__file__).parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ray_job_submit_indexes_on_a_local_head(synthetic_small, tmp_path):
    dashboard = free_port()
    # Ray's socket paths live under its temp dir and must fit in 107 bytes: pytest's tmp_path is too deep.
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # Its own ports on loopback and its own temp dir, so it cannot touch the test session's Ray;
    # --block keeps the head in this process group, which we stop with a signal at the end.
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         f"--temp-dir={ray_temp}", "--num-cpus=2", "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # The job's `python` must be this environment's, activated or not.
        env={**{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while subprocess.run([RAY, "job", "list", "--address", address], capture_output=True).returncode:
            assert time.monotonic() < deadline and head.poll() is None, f"the head did not start: {head.stderr.read()!r}"
            time.sleep(1)
        db = tmp_path / "db"
        submitted = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
             "python", "pipelines/index.py", str(synthetic_small / "videos"), "--db", str(db),
             "--model", "centerclip-test", "--frames", "4"],
            capture_output=True, text=True, timeout=300,
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "succeeded" in submitted.stdout
        assert Store.open(str(db)).count() == 20
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        shutil.rmtree(ray_temp, ignore_errors=True)
