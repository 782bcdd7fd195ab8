"""The search service on Ray Serve: one deployment, ``SearchService``, whose replicas each hold the
text tower (GPU when the cluster has one), encode concurrent queries as one batch, and serve the
HTTP API and the page (web/) over one store, re-read every ``refresh`` seconds so that rows an
indexer writes show up.

    serve run centerclip.search.service:build db=centerclip.lancedb    # under Ray Serve's own CLI
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
from ray import serve

from ..index.store import Store
from ..media import stores
from ..media.sources import path_from_uri
from ..model.registry import DEFAULT_MODEL, EncoderConfig, check_encoder
from .ingress import INGRESSES, haproxy_environment
from .ingress import enabled as ingress_enabled
from .web.access import TOKEN_ENV, is_loopback, token_from_env


PROJECT = Path(__file__).resolve().parents[2]  # the folder that holds the centerclip package


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
    ingress: str = "proxy"  # how HTTP reaches the replicas (centerclip.search.ingress): "proxy" or "haproxy"

    def __post_init__(self):
        if self.ingress not in INGRESSES:
            raise ValueError(f"ingress must be one of {', '.join(INGRESSES)}, got {self.ingress!r}")
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
        # torch, open_clip and the web app are imported here, in the replica, so that the process
        # that launches the service stays small and starts fast.
        import torch

        from ..model.encoder import VideoEncoder

        self.store = Store.open(db, table=table, read_consistency=timedelta(seconds=refresh))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = VideoEncoder.create(EncoderConfig(model=model, pretrained=pretrained)).eval().to(self.device)
        if self.encoder.embed_dim != self.store.dim:
            raise ValueError(dimension_mismatch(self.encoder.model_name, self.encoder.embed_dim, self.store.dim))
        self.token = token

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def embed(self, queries: list[str]) -> list:
        """Queries that arrive together are encoded as one batch (what a GPU replica wants): a
        vector (numpy) each."""
        import torch

        with torch.inference_mode():
            return list(self.encoder.encode_text(queries).float().cpu().numpy())

    def __serve_build_asgi_app__(self):
        from .web.app import create_app

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
    options = {"num_cpus": config.cpus, "num_gpus": gpus}
    if stores.environment():  # the replicas read the db and the media with the caller's store settings
        options["runtime_env"] = {"env_vars": stores.environment()}
    service = SearchService.options(autoscaling_config=scaling, ray_actor_options=options)
    return service.bind(absolute(config.db), config.table, config.refresh, token_from_env(config.token),
                        config.model, config.pretrained)


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run centerclip.search.service:build db=... [table=...]`` and serve
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


def absolute(db: str) -> str:
    """A local db as an absolute path: replicas need not run in the caller's folder."""
    return os.path.abspath(db) if path_from_uri(db) == db else db  # a plain path, not a uri


def connect(ingress: str = "proxy") -> None:
    """Start a local Ray, or join the cluster of RAY_ADDRESS / ray job submit. Ray puts the
    driver's folder on its workers' import path: Ray is started or joined from the project's
    folder, so that files beside the caller never shadow the project's modules in a replica.
    ``ingress`` "haproxy" sets Ray Serve's HAProxy variables first; a Ray that starts here
    inherits them, a cluster must have been started with them (``check_ingress``)."""
    address = None  # Ray's own choice: RAY_ADDRESS, a cluster recorded on this machine, or a new one
    if ingress == "haproxy" and not ingress_enabled() and not os.environ.get("RAY_ADDRESS"):
        os.environ.update(haproxy_environment())
        address = "local"  # a Ray of our own, which inherits the variables
    with contextlib.chdir(PROJECT):
        ray.init(address=address, logging_level="WARNING")
    check_ingress(ingress)


def check_ingress(ingress: str) -> None:
    if ingress == "haproxy" and not ingress_enabled():
        raise ValueError("--ingress haproxy: this Ray was started without it; on a cluster, set "
                         "RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1 where `ray start` runs")


def check(config: ServeConfig) -> None:
    """What can be refused before Ray starts: an address beyond loopback without a token, and a
    table the model cannot search."""
    if not is_loopback(config.host) and not token_from_env(config.token):
        raise ValueError(f"binding {config.host} exposes the index beyond this machine: set a token with --token "
                         f"or {TOKEN_ENV}, or bind a loopback address (127.0.0.0/8, ::1) and use an SSH tunnel")
    check_table(config)


def start(config: ServeConfig) -> str:
    """Run the app on Ray Serve (joining Ray first with ``connect`` unless it is up) and return
    its URL once every deployment is up."""
    check(config)
    if not ray.is_initialized():
        connect(config.ingress)
    check_ingress(config.ingress)
    app = application(config)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(app, name=config.name, route_prefix="/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}/"
