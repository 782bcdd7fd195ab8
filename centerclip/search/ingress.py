"""How HTTP reaches the service's replicas: Ray Serve's Python proxy (``proxy``, the default) or
HAProxy (``haproxy``), Ray Serve's own high-throughput ingress (Ray >= 2.55), which forwards each
request straight to a replica's own HTTP server instead of through a Python actor.

Measured on 2 cores (benchmarks/RESULTS.md): the proxy hop costs about 9 ms per request and a
third of the CPU under load; HAProxy brings one client's p50 within 5 ms of the in-process search
and 16 clients' throughput to the in-process figure. Ray Serve reads its settings from the
environment of the Ray processes, so the choice is made where Ray starts: by serve.py when it
starts Ray itself, or in the environment of ``ray start`` on a cluster (cluster.yaml).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import tempfile
import time

INGRESSES = ("proxy", "haproxy")
ENABLED = "RAY_SERVE_ENABLE_HA_PROXY"


def enabled() -> bool:
    """Whether the Ray this process runs in (or will start) serves through HAProxy."""
    return os.environ.get(ENABLED) == "1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def haproxy_environment() -> dict[str, str]:
    """The variables that make a Ray started from here serve through HAProxy. Its admin socket
    (Ray Serve makes it mode 666, with admin level) and its files go to a private folder instead
    of the shared /tmp/haproxy-serve, and its stats and metrics listeners get free ports so that
    two services on one machine do not collide."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise ValueError("--ingress haproxy needs the haproxy program (Debian/Ubuntu: apt-get install -y haproxy)")
    folder = _private_folder()
    return {ENABLED: "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(folder, "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(folder, "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(folder, "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(folder, "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port())}


@functools.cache
def _private_folder() -> str:
    # Mode 0700: only this user reaches the socket. Short: Ray Serve adds a 57-character folder,
    # and HAProxy takes socket paths of at most 97 bytes.
    folder = tempfile.mkdtemp(prefix="ccha", dir="/tmp" if os.path.isdir("/tmp") else None)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(stop_haproxies, folder)  # runs first: atexit calls in reverse order
    return folder


def _haproxies_of(folder: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(os.path.join(entry.path, "cmdline"), "rb") as file:
                    arguments = file.read().split(b"\0")
            except OSError:  # it ended while we looked
                continue
            if os.path.basename(arguments[0]) == b"haproxy" and any(folder.encode() in argument for argument in arguments):
                found.append(int(entry.name))
    return found


def stop_haproxies(folder: str, wait: float = 5.0) -> None:
    """Stop the HAProxy processes that run on this service's files. Ray Serve's manager reloads
    HAProxy when the replicas change, shutting down included, and a process it spawns after the
    Ray processes got their SIGTERM outlives them (seen when the launcher's process group is
    signalled)."""
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + wait
    while (pids := _haproxies_of(folder)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(0.1)
