"""How many decoder and encoder actors a job runs, and with what CPUs and GPUs each.

Every actor is sized from what one node can host, never from the cluster's totals: two 1-CPU
nodes are not one 2-CPU node, and an actor that asks for more than any node has waits forever.
The nodes are those alive now and, where an autoscaler runs, the node types it can add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .job import IndexJob

# Where `ray up` leaves the cluster's config (with each node type's resources) on the head node,
# which is where `ray job submit` runs the driver.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")
MAX_ENCODER_CPUS = 8.0  # past 8 threads a forward gains little; more actors use big nodes better


@dataclass(frozen=True)
class NodeShape:
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class ClusterShape:
    """The worker nodes alive now (those with CPUs), and the node types an autoscaler can add
    (none: the cluster is what it is, unless no node is here yet)."""

    nodes: tuple[NodeShape, ...] = ()
    node_types: tuple[NodeShape, ...] = ()

    @property
    def grows(self) -> bool:
        return bool(self.node_types) or not self.nodes


@dataclass(frozen=True)
class Pools:
    """Actor pools of the two stages: (min, max) actors, max None = as many as the cluster has
    or its autoscaler adds; CPUs (and GPUs) per actor; the encoder's CPU threads."""

    decoders: tuple[int, int | None]
    decoder_cpus: float
    encoders: tuple[int, int | None]
    encoder_cpus: float
    encoder_gpus: float
    threads: int

    def strategy(self, stage: str):
        import ray

        low, high = getattr(self, stage)
        if low == high:
            return ray.data.ActorPoolStrategy(size=low)
        # A bounded pool starts whole (what the cluster holds for it) but runs once one actor is up.
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high, initial_size=high)


def node_types(config: dict[str, Any]) -> tuple[NodeShape, ...]:
    """The worker node types of a cluster launcher config (cluster.yaml, or the autoscaler's copy
    on the head) that the autoscaler may start and that have CPUs."""
    head = config.get("head_node_type")
    shapes = []
    for name, node_type in config.get("available_node_types", {}).items():
        resources = node_type.get("resources") or {}
        if name != head and node_type.get("max_workers", config.get("max_workers", 0)) > 0 and resources.get("CPU", 0) > 0:
            shapes.append(NodeShape(float(resources["CPU"]), float(resources.get("GPU", 0))))
    return tuple(shapes)


def cluster_shape(config: Path = AUTOSCALER_CONFIG) -> ClusterShape:
    """The connected cluster's nodes (``ray.nodes()``) and its autoscaler's node types."""
    import ray
    import yaml

    nodes = tuple(NodeShape(node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
                  for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0.0) > 0)
    path = config.expanduser()
    return ClusterShape(nodes, node_types(yaml.safe_load(path.read_text())) if path.is_file() else ())


def pools(job: IndexJob, cluster: ClusterShape) -> Pools:
    """Size both stages so that a decoder and an encoder fit together on the smallest node (with
    no node known yet, a node of one CPU), and, on a cluster that cannot grow, bound each pool by
    what its nodes hold beside the other stage, so neither pool can take the CPUs that the other
    needs to start or restart. Ray Data grows a pool while its stage is the bottleneck; pending
    actors of a pool with room to grow make the autoscaler add nodes. The job's flags override."""
    shapes = cluster.nodes + cluster.node_types
    smallest = min((shape.cpus for shape in shapes), default=1.0)
    decoder_cpus = job.decoder_cpus or min(0.5, smallest / 2)  # decoding 8-16 small frames is light next to encoding them
    if job.gpus_per_encoder:
        gpu_cpus = min((shape.cpus for shape in shapes if shape.gpus >= job.gpus_per_encoder), default=None)
        encoder_cpus = job.encoder_cpus or (1.0 if gpu_cpus is None else min(1.0, max(0.25, gpu_cpus - decoder_cpus)))
        per_node = [math.floor(shape.gpus / job.gpus_per_encoder + 1e-9) for shape in cluster.nodes]
    else:  # on CPUs: an encoder takes what a decoder leaves on the smallest node, up to 8 CPUs
        if job.encoders and not job.encoder_cpus:
            encoder_cpus = max(0.25, (smallest - (job.decoders or 1) * decoder_cpus) / job.encoders)
        else:
            encoder_cpus = job.encoder_cpus or max(0.25, min(MAX_ENCODER_CPUS, smallest - decoder_cpus))
        per_node = [max(0, math.floor((shape.cpus - decoder_cpus) / encoder_cpus + 1e-9)) for shape in cluster.nodes]
    if cluster.grows:
        most_encoders = most_decoders = None
    else:
        most_encoders = max(1, sum(per_node))
        left = [shape.cpus - count * encoder_cpus for shape, count in zip(cluster.nodes, per_node)]
        most_decoders = max(1, sum(math.floor(cpus / decoder_cpus + 1e-9) for cpus in left))
    decoders = (job.decoders, job.decoders) if job.decoders else (1, most_decoders)
    encoders = (job.encoders, job.encoders) if job.encoders else (1, most_encoders)
    # Ray caps an actor's threads at its whole CPUs (OMP_NUM_THREADS); the encoder sets its own.
    return Pools(decoders, decoder_cpus, encoders, encoder_cpus, job.gpus_per_encoder, max(1, round(encoder_cpus)))
