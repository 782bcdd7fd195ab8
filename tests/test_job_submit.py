"""`ray job submit --working-dir . -- python pipelines/index.py ...` against a real head node."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from centerclip.index.store import Store

REPO = Path(__file__).parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> set[str]:
    """The IPv4 addresses a TCP port listens on, from /proc/net/tcp{,6} (state 0A), as dotted quads;
    an IPv4-mapped IPv6 address counts as its IPv4 one, any other IPv6 address as "::"."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            if len(address) == 32 and address[:24] != "0000000000000000FFFF0000":
                found.add("::")
                continue
            found.add(".".join(str(int(address[-8:][i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_ray_job_submit_indexes_on_a_local_head(synthetic_small, tmp_path):
    dashboard = free_port()
    # Ray's socket paths live under its temp dir and must fit in 107 bytes: pytest's tmp_path is too deep.
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # Token authentication, as cluster.yaml runs it; the job's `python` is this environment's.
    env = {**{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           # Without this, Ray may swap 127.0.0.1 for the host's address and listen there.
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # Every port the head listens on is its own, on loopback: the test session's Ray already holds
    # the defaults (its dashboard agent on 52365, for one), and a head that cannot bind them has no
    # job agent. --block keeps the head in this process group, which we stop with a signal at the end.
    ports = [f"--{name}={free_port()}" for name in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", *ports,
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         f"--temp-dir={ray_temp}", "--num-cpus=2", "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, env=env).returncode:
            assert time.monotonic() < deadline and head.poll() is None, f"the head did not start: {head.stderr.read()!r}"
            time.sleep(1)
        gcs = int(ports[0].split("=")[1])
        assert listening(gcs) and all(address.startswith("127.") for address in listening(gcs)), listening(gcs)
        db = tmp_path / "db"
        command = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--no-wait",
                   "--submission-id", "index-test", "--", "python", "pipelines/index.py",
                   str(synthetic_small / "videos"), "--db", str(db), "--model", "centerclip-test", "--frames", "4"]
        # The head answers before its job agent is up; the CLI then says to try again later.
        deadline = time.monotonic() + 60
        while True:
            submitted = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
            if "No available agent" not in submitted.stdout + submitted.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        deadline = time.monotonic() + 240
        status = ""
        while time.monotonic() < deadline and not any(word in status.lower() for word in ("succeeded", "failed", "stopped")):
            time.sleep(2)
            status = subprocess.run([RAY, "job", "status", "--address", address, "index-test"],
                                    capture_output=True, text=True, env=env).stdout
        logs = subprocess.run([RAY, "job", "logs", "--address", address, "index-test"],
                              capture_output=True, text=True, env=env).stdout
        assert "succeeded" in status.lower(), status + logs[-3000:]
        assert Store.open(str(db)).count() == 20
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        shutil.rmtree(ray_temp, ignore_errors=True)
