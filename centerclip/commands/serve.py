"""Search as a service on Ray Serve: an HTTP JSON API and a web page over an indexed table.

    python pipelines/serve.py --db centerclip.lancedb            # then open http://127.0.0.1:8000/
    serve run centerclip.search.service:build db=centerclip.lancedb          # the same app under Ray Serve's CLI

One deployment, ``SearchService``: each replica holds the text tower (GPU when the cluster has one),
encodes concurrent queries as one batch, serves the API and the page (centerclip.search.web) and opens
the store once, re-reading it every ``--refresh`` seconds so rows an indexer writes show up.
Replicas autoscale between --min-replicas and --max-replicas. The server binds 127.0.0.1; another
--host needs a token (--token, or CENTERCLIP_TOKEN), checked on every request.
"""

from __future__ import annotations

import signal
import threading

from .. import cli
from ..model.registry import DEFAULT_MODEL
from ..search.ingress import INGRESSES
from ..search.web.access import TOKEN_ENV


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="centerclip.lancedb", help="LanceDB database written by pipelines/index.py (default: %(default)s)")
    parser.add_argument("--table", default="videos", help="embeddings table (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; any other needs a token)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--token", help=f"secret every request must carry; prefer the {TOKEN_ENV} environment variable, "
                                        "which other users cannot read in the process list")
    parser.add_argument("--model", help=f"open_clip model the table was indexed with (default: the built-in {DEFAULT_MODEL})")
    parser.add_argument("--pretrained", help="weights of that model: open_clip tag, file or centerclip checkpoint")
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between checks for newly indexed rows (default: %(default)s)")
    parser.add_argument("--min-replicas", type=int, default=1, help="replicas at least (default: %(default)s)")
    parser.add_argument("--max-replicas", type=int, default=2, help="replicas at most (default: %(default)s)")
    parser.add_argument("--cpus", type=float, default=0.5, help="CPUs per replica (default: %(default)s)")
    parser.add_argument("--ingress", choices=INGRESSES, default="proxy",
                        help="how HTTP reaches the replicas: Ray Serve's Python proxy, or HAProxy (needs the haproxy "
                             "program; a third less CPU per request; its stats and metrics listen on all interfaces) "
                             "(default: %(default)s)")
    parser.add_argument("--gpus", type=float, help="GPUs per replica, for the text tower (default: 0.25 where the cluster has GPUs)")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until Ctrl-C (or SIGTERM), then stop what this process started."""
    args = vars(build_parser().parse_args(argv))
    args.pop("debug")
    import ray
    from ray import serve

    from ..search.service import ServeConfig, check, connect, start

    config = ServeConfig(**args)
    check(config)  # a bad address or table is one line, before Ray takes seconds to start
    own_ray = not ray.is_initialized()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    started = False
    try:
        if own_ray:
            connect(config.ingress)
        # After Ray's start: its core worker answers SIGTERM by aborting with a stack trace.
        for signum in handlers:
            signal.signal(signum, _interrupt)
        url = start(config)
        started = True
        print(f"centerclip is serving {config.db} (table {config.table}) at {url}  (Ctrl-C stops it)", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping the service", flush=True)
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()  # the Ray started here, and Serve with it
        elif started:  # our app only: Serve may run other apps on a shared cluster; the cluster finishes the deletion
            serve.delete(config.name, _blocking=False)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
