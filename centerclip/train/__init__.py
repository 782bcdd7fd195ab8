"""Fine-tuning the encoder on a benchmark split (symmetric InfoNCE, Ray Train across workers),
evaluating it, and the retrieval metrics (R@K, median and mean rank, bootstrap intervals)."""

from .. import lazy_exports

_PUBLIC = {"TrainConfig": "config", "train": "loop", "TrainJob": "trainer", "evaluate": "evaluation",
           "embed_videos": "evaluation", "retrieval_metrics": "metrics", "EvaluateJob": "benchmark"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
