"""A job never hangs: Ray Data waits without end for actors that no node can host (or for nodes
that never come), so the driver stops the job with one line when no batch has come for a while
and the cluster has not changed meanwhile."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from ..cli import JobStopped
from .pools import Pools

POLL_S = 5.0  # how often the driver looks at the cluster while it waits


def alive_nodes() -> frozenset[tuple[str, float, float]]:
    """The cluster's live nodes: (id, CPUs, GPUs)."""
    import ray

    return frozenset((node["NodeID"], node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
                     for node in ray.nodes() if node["Alive"])


def why_stalled(minutes: float, sizes: Pools, nodes: frozenset[tuple[str, float, float]]) -> str:
    """One line: how long nothing came, what each actor asks for, and what the cluster has."""
    import ray

    nodes = sorted(nodes, key=lambda node: (-node[1], -node[2]))
    shapes = ", ".join(f"{cpus:g} CPU" + (f" {gpus:g} GPU" if gpus else "") for _, cpus, gpus in nodes) or "none"
    free = ray.available_resources()
    encoder = f"{sizes.encoder_cpus:g} CPU" + (f" {sizes.encoder_gpus:g} GPU" if sizes.encoder_gpus else "")
    return (f"nothing was indexed for {minutes:g} min (--stall-minutes) and the cluster did not change: each decoder asks "
            f"for {sizes.decoder_cpus:g} CPU and each encoder for {encoder}; nodes alive: {len(nodes)} ({shapes}), "
            f"{free.get('CPU', 0.0):g} CPU and {free.get('GPU', 0.0):g} GPU free. Add nodes, or ask for less with "
            f"--decoder-cpus/--encoder-cpus/--gpus-per-encoder; a re-run goes on from what was written")


def within(batches: Iterable, stall_minutes: float, why: Callable[[frozenset], str]) -> Iterator:
    """The items of ``batches``; raises JobStopped(why(alive nodes)) when none has come for ``stall_minutes``
    (0: wait forever) while the cluster's nodes stayed the same (a node joining or leaving is the
    cluster at work: an autoscaler's node booting, a lost one replaced). Only the wait for an item
    counts, not what the caller does with one. A watcher thread interrupts the wait in the main
    thread, so Ray Data's iterator unwinds there and shuts its executor down."""
    if not stall_minutes:
        yield from batches
        return
    lock = threading.Lock()
    state = {"waiting_since": None, "nodes": alive_nodes(), "reason": None}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(min(POLL_S, stall_minutes * 60)):
            nodes = alive_nodes()
            with lock:
                if nodes != state["nodes"]:
                    state["nodes"] = nodes
                    if state["waiting_since"] is not None:
                        state["waiting_since"] = time.monotonic()
                elif state["waiting_since"] is not None and time.monotonic() - state["waiting_since"] > stall_minutes * 60:
                    state["reason"] = why(nodes)
                    _thread.interrupt_main()  # a KeyboardInterrupt in the main thread, which waits
                    return

    watcher = threading.Thread(target=watch, name="centerclip-stall-watch", daemon=True)
    watcher.start()
    iterator = iter(batches)
    try:
        while True:
            with lock:
                state["waiting_since"] = time.monotonic()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                with lock:
                    state["waiting_since"] = None
            yield item
    except KeyboardInterrupt:
        if state["reason"] is None:
            raise  # the user's Ctrl-C
        raise JobStopped(state["reason"]) from None
    finally:
        done.set()
