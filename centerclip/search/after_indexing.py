"""What the index command runs: the indexing engine, then the search the job asks for (--query),
and on the generated sample set (no inputs) a search for every caption, to measure the search on
videos the built-in model never saw."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..index.engine import run
from ..index.job import IndexJob
from ..index.sample import sample_inputs

if TYPE_CHECKING:
    from .searcher import Searcher


def index_and_search(job: IndexJob, progress=None) -> dict:
    """The engine's summary, with ``search`` (the query's top 3) and, on the sample set, ``sample``
    (R@1, R@5 and the median rank of every caption's own video)."""
    summary = run(job, progress)  # checks the model first, then generates the sample set if no inputs are given
    sample = None if job.inputs else sample_inputs(job)  # the set just indexed
    if sample is not None:
        job = dataclasses.replace(job, query=sample.query)
    if not job.query:
        return summary
    from ..index.store import Store
    from ..model.encoder import VideoEncoder  # torch: only for a search
    from .searcher import Searcher

    # After run(): a local Ray it started is gone before the model loads here.
    searcher = Searcher(Store.open(job.db, table=job.table), VideoEncoder.create(job.encoder_config()))
    results = searcher.text(job.query, k=3)
    summary["search"] = {"query": job.query, "expected": sample.expected if sample else None,
                         "results": [result.to_dict() for result in results]}
    if sample is not None:
        ranks = caption_ranks(searcher, sample.captions, summary["found"])
        summary["search"]["rank"] = ranks[[caption for caption, _ in sample.captions].index(job.query)]
        summary["sample"] = {"captions": len(ranks), "videos": summary["found"],
                             "R@1": round(100 * sum(rank == 1 for rank in ranks) / len(ranks), 1),
                             "R@5": round(100 * sum(rank <= 5 for rank in ranks) / len(ranks), 1),
                             "median_rank": float(np.median(ranks))}
    return summary


def caption_ranks(searcher: Searcher, captions: tuple[tuple[str, str], ...], videos: int) -> list[int]:
    """Where each caption's own video ranks (1 = first) when the caption is searched for, among
    ``videos`` results (videos + 1 when it is not among them)."""
    import torch

    with torch.inference_mode():
        vectors = searcher.encoder.encode_text([caption for caption, _ in captions]).float().cpu().numpy()
    ranks = []
    for vector, (_, expected) in zip(vectors, captions):
        names = [Path(result.uri).name for result in searcher.vector(vector, videos)]
        ranks.append(names.index(expected) + 1 if expected in names else videos + 1)
    return ranks
