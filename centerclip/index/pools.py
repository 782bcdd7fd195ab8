"""How many decoder and encoder actors a job runs, and with what CPUs and GPUs each."""

from __future__ import annotations

from dataclasses import dataclass

from .job import IndexJob


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
        return ray.data.ActorPoolStrategy(size=low) if low == high else ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def pools(job: IndexJob, resources: dict[str, float]) -> Pools:
    """Size the stages to the cluster (``ray.cluster_resources()``); the job's flags override.
    Ray Data grows an autoscaling pool while its stage is the bottleneck and resources are free;
    pending actors of a pool with room to grow make the Ray autoscaler add nodes (GPU workers
    of cluster.yaml), so GPUs get encoders and their CPUs get decoders without tuning."""
    decoders = (job.decoders, job.decoders) if job.decoders else (1, None)
    if job.gpus_per_encoder:
        encoder_cpus = job.encoder_cpus or 1.0
        encoders = (job.encoders, job.encoders) if job.encoders else (1, None)
    else:  # on CPUs: the encoders share what the first decoders leave on a node, up to 8 CPUs each
        left = resources.get("CPU", 1.0) - (job.decoders or 1) * job.decoder_cpus
        if job.encoders:
            encoders, encoder_cpus = (job.encoders, job.encoders), job.encoder_cpus or max(0.25, left / job.encoders)
        else:
            encoder_cpus = job.encoder_cpus or max(1.0, min(8.0, left))
            encoders = (1, max(1, int(left // encoder_cpus)))
    # Ray caps an actor's threads at its whole CPUs (OMP_NUM_THREADS); the encoder sets its own.
    return Pools(decoders, job.decoder_cpus, encoders, encoder_cpus, job.gpus_per_encoder, max(1, round(encoder_cpus)))
