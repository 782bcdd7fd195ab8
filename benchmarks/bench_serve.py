"""End-to-end /api/search latency and throughput of the Ray Serve app (pipelines/serve.py).

A table of ``--rows`` synthetic rows (random unit vectors of the built-in model's size, grouped
into videos of 1 + 3 moments) is written and ANN-indexed once; then for 1 and 2 replicas of the
service: one client issuing queries back to back (p50/p95 latency), and ``--clients``
concurrent clients (queries/s, p50/p95). Every query is a different caption, so nothing is served
from a cache. Baseline in the same run: the same searches in-process (Searcher: encode + ANN +
grouping, no HTTP, no Serve), one client and ``--clients`` threads, so the ratio is what serving
adds. Each ingress (centerclip.search.ingress: Ray Serve's Python proxy, HAProxy) gets a Ray of
its own, since Ray Serve reads the choice from its processes' environment.

    python benchmarks/bench_serve.py                       # 100k rows, 400 queries per setting
    python benchmarks/bench_serve.py --out benchmarks/results/serve-1.json      # keep the raw latencies
    python benchmarks/bench_serve.py --rows 20000 --queries 40     # a quick check
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from centerclip import VideoEncoder  # noqa: E402
from centerclip.datasets.synthetic_scenes import plan  # noqa: E402
from centerclip.search.ingress import INGRESSES, haproxy_environment  # noqa: E402
from centerclip.search.searcher import Searcher  # noqa: E402
from centerclip.index.keys import moment_key, video_key  # noqa: E402
from centerclip.index.store import Store  # noqa: E402


def write_table(db: str, rows: int, dim: int) -> Store:
    store = Store.open(db, dim=dim)
    rng = np.random.default_rng(0)
    batch = 20_000
    for begin in range(0, rows, batch):
        count = min(batch, rows - begin)
        columns: dict[str, list] = {name: [] for name in ("id", "video_id", "kind", "uri", "start", "end")}
        for row in range(begin, begin + count):
            key = video_key(f"/videos/{row // 4}.mp4", 1, 1)
            start = None if row % 4 == 0 else 10.0 * (row % 4 - 1)
            values = {"id": key if start is None else moment_key(key, start, start + 10), "video_id": key,
                      "kind": "video" if start is None else "moment", "uri": f"/videos/{row // 4}.mp4",
                      "start": start, "end": None if start is None else start + 10}
            for name, value in values.items():
                columns[name].append(value)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert({**columns, "vector": vectors, "model": ["centerclip-tiny"] * count, "schedule": ["none"] * count})
    print(f"  ANN index: {store.ensure_index()}", flush=True)
    return store


def queries(count: int) -> list[str]:
    captions = [caption for video in plan(max(count, 50), seed=7) for caption in video.captions]
    return list(dict.fromkeys(captions))[:count]


class Client:
    """One keep-alive HTTP connection, like a browser tab or an API client."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, query: str) -> float:
        began = time.perf_counter()
        self.connection.request("GET", "/api/search?" + urllib.parse.urlencode({"q": query, "k": 10}))
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200 or len(json.loads(body)["results"]) != 10:
            raise RuntimeError(f"search answered {response.status}: {body[:200]!r}")
        return time.perf_counter() - began


def one_client(port: int, texts: list[str]) -> list[float]:
    client = Client(port)
    for text in texts[:5]:  # warm-up: connections, replicas, caches of the index files
        client.search(text)
    return [client.search(text) for text in texts]


def together(texts: list[str], clients: int, open_client: Callable[[], Callable[[str], float]]) -> tuple[list[float], float]:
    """``clients`` threads, each with its own client (``open_client()``: a function that runs one
    query and returns its latency), sharing ``texts``; all start together once every client is
    ready. Every latency, and queries/s over the timed part."""
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def work(share: list[str]) -> None:
        query = open_client()
        ready.wait()
        mine = [query(text) for text in share]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(texts[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, len(texts) / (time.perf_counter() - began)


def many_clients(port: int, texts: list[str], clients: int, warm: list[str]) -> tuple[list[float], float]:
    """Every client connects and sends two warm-up queries (so every replica is warm), then all
    start together; queries/s over the timed part."""
    def open_client() -> Callable[[str], float]:
        client = Client(port)
        for text in warm[:2]:
            client.search(text)
        return client.search

    return together(texts, clients, open_client)


def in_process_clients(searcher: Searcher, texts: list[str], clients: int) -> tuple[list[float], float]:
    """The same load without HTTP or Serve: ``clients`` threads calling the searcher, all
    starting together; what the store and the text tower cost under this concurrency."""
    def query(text: str) -> float:
        began = time.perf_counter()
        searcher.text(text, k=10)
        return time.perf_counter() - began

    return together(texts, clients, lambda: query)


def plain_server(db: str, port: int) -> None:
    """The service's app on uvicorn alone, in this process (no Ray, no Serve): the same app, store
    and text tower as a replica, so that the difference to it is what Serve costs."""
    import uvicorn
    from starlette.concurrency import run_in_threadpool

    from centerclip.search.web.app import create_app

    torch.set_num_threads(1)
    encoder = VideoEncoder.create().eval()

    async def embed(query: str) -> np.ndarray:
        def encode() -> np.ndarray:
            with torch.inference_mode():
                return encoder.encode_text([query])[0].float().numpy()
        return await run_in_threadpool(encode)

    store = Store.open(db, read_consistency=timedelta(seconds=1))
    uvicorn.run(create_app(store, embed), host="127.0.0.1", port=port, log_level="warning")


def measure_plain(folder: str, port: int, texts: list[str], args) -> tuple[list[float], list[float], float]:
    server = subprocess.Popen([sys.executable, __file__, "--plain-server", folder, str(port)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        single = one_client(port, texts[:args.queries])
        together, rate = many_clients(port, texts[args.queries:], args.clients, texts)
        return single, together, rate
    finally:
        server.terminate()
        server.wait()


def ms(values: list[float], quantile: float) -> float:
    return 1000 * float(np.quantile(values, quantile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400, help="queries per setting (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ingress", nargs="+", choices=INGRESSES, default=["proxy", "haproxy"] if shutil.which("haproxy") else ["proxy"],
                        help="how HTTP reaches the replicas (default: both where haproxy is installed)")
    parser.add_argument("--out", help="write every latency here as JSON (benchmarks/results/serve-*.json)")
    parser.add_argument("--plain-server", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        return plain_server(args.plain_server[0], int(args.plain_server[1]))
    import ray
    from ray import serve

    from centerclip.search.service import ServeConfig, start

    print(f"load average before: {os.getloadavg()}", flush=True)
    encoder = VideoEncoder.create()
    texts = queries(args.queries * 2)
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        store = write_table(folder, args.rows, encoder.embed_dim)
        print(f"{store.count()} rows of {encoder.embed_dim} dims written and indexed in {time.perf_counter() - began:.0f} s")
        # The same as a service replica: one torch thread, the same read consistency interval.
        torch.set_num_threads(1)
        searcher = Searcher(Store.open(folder, read_consistency=timedelta(seconds=1)), encoder)
        for text in texts[:5]:
            searcher.text(text, k=10)
        inline = []
        for text in texts[:args.queries]:
            began = time.perf_counter()
            searcher.text(text, k=10)
            inline.append(time.perf_counter() - began)
        print(f"baseline, in-process Searcher.text: p50 {ms(inline, 0.5):.1f} ms, p95 {ms(inline, 0.95):.1f} ms")
        together, rate = in_process_clients(searcher, texts[args.queries:], args.clients)
        print(f"baseline, in-process Searcher.text from {args.clients} threads: {rate:.1f} queries/s, "
              f"p50 {ms(together, 0.5):.1f} ms, p95 {ms(together, 0.95):.1f} ms", flush=True)

        raw = {"rows": args.rows, "clients": args.clients, "load_before": os.getloadavg(),
               "in_process": {"one_client_s": inline, "clients_s": together, "clients_qps": rate}, "served": []}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        print(f"| ingress | replicas | 1 client p50 / p95 | vs in-process p50 | {args.clients} clients q/s | p50 / p95 |")
        print("| --- | --- | --- | --- | --- | --- |")
        single, together, rate = measure_plain(folder, port, texts, args)
        print(f"| uvicorn alone, no Serve | 1 | {ms(single, 0.5):.1f} / {ms(single, 0.95):.1f} ms | "
              f"{statistics.median(single) / statistics.median(inline):.2f}x | {rate:.1f} | "
              f"{ms(together, 0.5):.1f} / {ms(together, 0.95):.1f} ms |", flush=True)
        raw["plain"] = {"one_client_s": single, "clients_s": together, "clients_qps": rate}
        for ingress in args.ingress:
            # Ray Serve reads its ingress settings from the environment its processes start with.
            settings = haproxy_environment() if ingress == "haproxy" else {}
            os.environ.update(settings)
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
            for replicas in args.replicas:
                start(ServeConfig(db=folder, port=port, min_replicas=replicas, max_replicas=replicas,
                                  cpus=min(0.5, os.cpu_count() / (2 * replicas)), ingress=ingress))
                single = one_client(port, texts[:args.queries])
                together, rate = many_clients(port, texts[args.queries:], args.clients, texts)
                print(f"| {ingress} | {replicas} | {ms(single, 0.5):.1f} / {ms(single, 0.95):.1f} ms | "
                      f"{statistics.median(single) / statistics.median(inline):.2f}x | {rate:.1f} | "
                      f"{ms(together, 0.5):.1f} / {ms(together, 0.95):.1f} ms |", flush=True)
                raw["served"].append({"ingress": ingress, "replicas": replicas, "one_client_s": single,
                                      "clients_s": together, "clients_qps": rate})
                serve.delete("centerclip")
            serve.shutdown()
            ray.shutdown()
            for name in settings:
                del os.environ[name]
        raw["load_after"] = os.getloadavg()
        if args.out:
            Path(args.out).write_text(json.dumps(raw))
            print(f"raw latencies: {args.out}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
