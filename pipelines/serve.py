"""Search as a service on Ray Serve: an HTTP JSON API and a web page over an indexed table.

    python pipelines/serve.py --db centerclip.lancedb            # then open http://127.0.0.1:8000/
    serve run pipelines.serve:build db=centerclip.lancedb          # the same app under Ray Serve's CLI

One deployment, ``SearchService``: each replica holds the text tower (GPU when the cluster has one),
encodes concurrent queries as one batch, serves the API and the page (centerclip.search.web) and opens
the store once, re-reading it every ``--refresh`` seconds so rows an indexer writes show up.
Replicas autoscale between --min-replicas and --max-replicas. The server binds 127.0.0.1; another
--host needs a token (--token, or CENTERCLIP_TOKEN), checked on every request.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import ray
import torch
from ray import serve

from centerclip import EncoderConfig, VideoEncoder, cli
from centerclip.model.encoder import DEFAULT_MODEL
from centerclip.model.registry import check_encoder
from centerclip.index.store import Store
from centerclip.search.web.app import TOKEN_ENV, create_app, is_loopback, token_from_env


@dataclass(frozen=True)
class ServeConfig:
    db: str = "centerclip.lancedb"
    table: str = "videos"
    model: str | None = None  # None: the built-in model (search with the model that indexed the table)
    pretrained: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    refresh: float = 1.0  # seconds between checks for rows other processes wrote
    min_replicas: int = 1
    max_replicas: int = 2
    cpus: float = 0.5  # per replica
    gpus: float | None = None  # per replica; None: 0.25 where the cluster has GPUs
    name: str = "centerclip"  # the Serve application's name

    def __post_init__(self):
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas} and {self.max_replicas}")
        if self.refresh < 0 or self.cpus < 0:
            raise ValueError("refresh and cpus must not be negative")


def dimension_mismatch(model: str, model_dim: int, table_dim: int) -> str:
    return (f"{model} embeds into {model_dim} dims but the table holds {table_dim}-d vectors: "
            f"serve with the model that indexed it (--model, --pretrained)")


@serve.deployment(max_ongoing_requests=64)
@serve.ingress()
class SearchService:
    """The HTTP API and the page (centerclip.search.web.app) over one store, with the text tower in the
    same replica: encoding a query takes about a millisecond on a CPU, less than a hop to another
    deployment would cost."""

    def __init__(self, db: str, table: str, refresh: float, token: str | None, model: str | None, pretrained: str | None):
        self.store = Store.open(db, table=table, read_consistency=timedelta(seconds=refresh))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = VideoEncoder.create(EncoderConfig(model=model, pretrained=pretrained)).eval().to(self.device)
        if self.encoder.embed_dim != self.store.dim:
            raise ValueError(dimension_mismatch(self.encoder.model_name, self.encoder.embed_dim, self.store.dim))
        self.token = token

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def embed(self, queries: list[str]) -> list[np.ndarray]:
        """Queries that arrive together are encoded as one batch (what a GPU replica wants)."""
        with torch.inference_mode():
            return list(self.encoder.encode_text(queries).float().cpu().numpy())

    def __serve_build_asgi_app__(self):
        return create_app(self.store, self.embed, token=self.token)


def check_table(config: ServeConfig) -> None:
    """The table exists and holds vectors of the model's size (told by its JSON config, without
    torch; a model without one is checked when a replica builds it)."""
    store = Store.open(config.db, table=config.table)
    shape = check_encoder(EncoderConfig(model=config.model, pretrained=config.pretrained).resolved())
    if shape is not None and shape.embed_dim != store.dim:
        raise ValueError(dimension_mismatch(config.model or DEFAULT_MODEL, shape.embed_dim, store.dim))


def application(config: ServeConfig) -> serve.Application:
    """The deployment, bound to a config, for ``start`` and for ``serve run`` / ``serve deploy``
    (``build``): a missing table or one of another model's vector size is refused here."""
    check_table(config)
    gpus = config.gpus
    if gpus is None:
        gpus = 0.25 if ray.is_initialized() and ray.cluster_resources().get("GPU") else 0.0
    scaling = {"min_replicas": config.min_replicas, "max_replicas": config.max_replicas,
               "initial_replicas": config.min_replicas, "target_ongoing_requests": 8}
    service = SearchService.options(autoscaling_config=scaling,
                                    ray_actor_options={"num_cpus": config.cpus, "num_gpus": gpus})
    return service.bind(config.db, config.table, config.refresh, token_from_env(config.token),
                        config.model, config.pretrained)


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run pipelines.serve:build db=... [table=...]`` and serve
    deploy configs; the keys are ServeConfig's fields. Binding the proxy to another host than
    127.0.0.1 is Serve's setting there: give ``token=`` (or CENTERCLIP_TOKEN) with it; without a
    token the app answers loopback clients only."""
    fields = {field.name: field for field in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ValueError(f"unknown argument {unknown[0]!r}; arguments: {', '.join(fields)}")
    types = {"int": int, "float": float}
    values = {name: types.get(str(fields[name].type).split(" ")[0], str)(value) for name, value in args.items()}
    return application(ServeConfig(**values))


def start(config: ServeConfig) -> str:
    """Run the app on Ray Serve (a local Ray, or the cluster of RAY_ADDRESS / ray job submit) and
    return its URL once every deployment is up."""
    if not is_loopback(config.host) and not token_from_env(config.token):
        raise ValueError(f"binding {config.host} exposes the index beyond this machine: set a token with --token "
                         f"or {TOKEN_ENV}, or keep --host 127.0.0.1 and use an SSH tunnel")
    check_table(config)  # before Ray starts
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")
    app = application(config)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(app, name=config.name, route_prefix="/")
    return f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}/"


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
    parser.add_argument("--gpus", type=float, help="GPUs per replica, for the text tower (default: 0.25 where the cluster has GPUs)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until Ctrl-C (or SIGTERM), then delete the app."""
    args = vars(build_parser().parse_args(argv))
    args.pop("debug")
    config = ServeConfig(**args)
    url = start(config)
    print(f"centerclip is serving {config.db} (table {config.table}) at {url}  (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.delete(config.name)  # our app only: Serve may run other apps on a shared cluster


if __name__ == "__main__":
    cli.run(main)
