"""Stopping pipelines/index.py as users do: Ctrl-C (SIGINT to the terminal's process group, once or
twice) and SIGTERM (to the process group, as a service manager sends it). Each ends in one line and
exit 130 or 143, with no traceback and no process of the job left behind; a re-run is exact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from centerclip.index.store import Store
from tests.test_index import MODEL

ROOT = Path(__file__).resolve().parents[1]
COPIES = 15  # of the 20 small synthetic videos: long enough to be stopped mid-way


@pytest.fixture(scope="module")
def library(synthetic_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    for copy in range(COPIES):
        for video in sorted((synthetic_small / "videos").glob("*.mp4")):
            shutil.copy(video, folder / f"{copy}-{video.name}")
    return folder


def written(db: Path) -> bool:
    try:
        return Store.open(str(db)).count() > 0
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return False


def group_alive(pgid: int) -> list[str]:
    """The command lines of the processes still in process group ``pgid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    alive.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, ProcessLookupError):
                pass
    return alive


def stopped(library: Path, db: Path, signum: int, times: int) -> tuple[int, list[str], float]:
    """Run the indexer in a process group of its own, signal the group ``times`` times once it has
    written its first rows, and return (exit status, stderr lines, seconds from the first signal
    to the exit). (A SIGTERM in the second or so while ray.init sets up its core worker still
    meets Ray's own handler, which aborts: see the README.)"""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    environment["PYTHONFAULTHANDLER"] = "1"  # a crash shows where it happened
    job = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "index.py"), str(library), "--db", str(db), *MODEL],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment,
                           start_new_session=True)
    lines: list[str] = []
    listed = threading.Event()

    def read() -> None:
        for line in job.stderr:
            lines.append(line.rstrip("\n"))
            if " videos found" in line:
                listed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listed.wait(120), lines
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline and not written(db):
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before it could be stopped: give it more videos"
        began = time.monotonic()
        for _ in range(times):
            os.killpg(job.pid, signum)
            time.sleep(0.3)
        job.wait(timeout=60)
        took = time.monotonic() - began
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    reader.join(timeout=10)
    deadline = time.monotonic() + 15
    while group_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(job.pid), group_alive(job.pid)  # nothing of Ray's or the decoder's is left
    return job.returncode, lines, took


@pytest.mark.parametrize("signum, times, status, by", [(signal.SIGINT, 2, 130, "Ctrl-C"), (signal.SIGTERM, 1, 143, "SIGTERM")],
                         ids=["ctrl-c-twice", "sigterm"])
def test_a_stopped_run_says_what_it_kept_and_a_rerun_is_exact(ray_session, library, tmp_path, signum, times, status, by):
    db = tmp_path / "db"
    code, lines, took = stopped(library, db, signum, times)
    text = "\n".join(lines)
    assert code == status and "Traceback" not in text and "SIGTERM received" not in text, text
    assert lines[-1].startswith(f"index.py: stopped by {by}: "), text
    assert lines[-1].endswith("are in the table; the same command again goes on from there"), text
    assert took < 30, took  # 3-10 s here; a bound for a busy machine, not a benchmark

    from centerclip.commands import index

    again = index.main([str(library), "--db", str(db), *MODEL])
    assert again["already_indexed"] + again["videos"] == COPIES * 20 and again["errors"] == 0
    assert Store.open(str(db)).count() == COPIES * 20


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB file system of its own (tmpfs), unmounted after."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"needs to mount a small tmpfs (root, or a container that allows mounts): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_with_room_is_exact(ray_session, library, small_disk, capsys):
    from centerclip import cli
    from centerclip.commands import index

    db = small_disk / "db"
    with pytest.raises(SystemExit) as ended:
        cli.run(index.main, [str(library), "--db", str(db), *MODEL])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("index.py:")]
    assert ended.value.code == 1 and len(lines) == 1, lines  # the environment, not the user's input
    assert lines[0].startswith(f"index.py: stopped: no space left on the disk that holds {db} (")
    assert "MiB free" in lines[0] and lines[0].endswith("free space and run the same command again; what is written is kept")
    kept = Store.open(str(db)).count()  # the table is intact and searchable as far as it got
    assert 0 < kept < COPIES * 20
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    again = index.main([str(library), "--db", str(db), *MODEL])
    assert again["already_indexed"] == kept and kept + again["videos"] == COPIES * 20 == Store.open(str(db)).count()
