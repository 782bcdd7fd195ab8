"""Where and how the vision transformer reduces its tokens, as one frozen dataclass.

String form (for CLIs and sweeps), parsed and printed round-trip::

    none                                   no reduction: per-frame CLS, meanP
    kmedoids@6:4x49                        after block 6: 4 segments of 49 tokens each
    kmedoids(distance=cosine)@6:4x49       options in parentheses (only non-defaults are printed)
    kmedoids(self_distance=zero,sums=float64,chunk=1)@6:4x49   our exact-tie variant, see below
    spectral@6:4x49                        the published spectral clustering (raw tokens, dense heat kernel)
    spectral(graph=knn,solver=eigh,rows=unit)@6:4x49   kNN graph, eigh, F.normalize rows
    kmedoids@4:6x98,8:2x49                 two stages: 6 segments x 98, then 2 segments x 49
    pooling@6:4x49   sparse(sampling=random)@6:4x49

A stage ``B:SxK`` reduces after block B (1-based; B blocks run before it) by grouping the current
frames (or segments, at a later stage) of each video into S consecutive segments and keeping K
patch tokens per segment, plus one CLS token that is the mean of the segment's CLS tokens.

Every default is the published computation (mzhaoshuai/CenterCLIP's code with its params.py
defaults; ``centerclip/model/clustering.py`` says step by step what that is and what each option
changes). The options of both algorithms: ``self_distance`` (raw: the published distance matrix,
rounding noise on its diagonal; zero: exactly symmetric with a zero diagonal, about 3x faster to
build), ``sums`` (float32 as published, or exact float64 cluster costs), ``chunk`` (how many
segments share the published shift and stopping rule, 16 as for ViT-B/32; 1 makes each segment's
result independent of the rest of its batch). Spectral's alone (normalize, self_loops, graph, knn,
knn_per_frame, solver, rows) are read by spectral only.

Older versions wrote bare schedules (table rows, a checkpoint's meta.json, a sweep's results)
with other defaults: until issue 26 a bare ``kmedoids@...`` meant
``kmedoids(self_distance=zero,sums=float64,chunk=1)@...`` and a bare ``spectral@...`` meant
``spectral(graph=knn,solver=eigh,rows=unit,self_distance=zero,sums=float64,chunk=1)@...``;
before issue 13, ``spectral(normalize=true,self_loops=false,graph=heat,...)@...``. They select
the same tokens except where near-ties are rounded differently.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

ALGORITHMS = ("none", "kmedoids", "spectral", "pooling", "sparse")
KEEP = ("medoid", "mean")
DISTANCES = ("euclidean", "cosine")
GRAPHS = ("heat", "knn")
SELF_DISTANCES = ("raw", "zero")
SUMS = ("float32", "float64")
SOLVERS = ("svd", "eigh")
ROWS = ("eps", "unit")
SAMPLINGS = ("uniform", "random")

_OPTIONS = ("keep", "distance", "p", "max_iter", "self_distance", "sums", "chunk", "sigma", "normalize", "self_loops",
            "graph", "knn", "knn_per_frame", "solver", "rows", "sampling", "seed")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_STAGE = re.compile(r"^(\d+):(\d+)x(\d+)$")
_SCHEDULE = re.compile(r"^(?P<algorithm>[a-z]+)(?:\((?P<options>[^()]*)\))?(?:@(?P<stages>.+))?$")


@dataclass(frozen=True)
class Stage:
    block: int
    segments: int
    tokens: int

    def __str__(self) -> str:
        return f"{self.block}:{self.segments}x{self.tokens}"


@dataclass(frozen=True)
class Schedule:
    algorithm: str = "none"
    stages: tuple[Stage, ...] = ()
    keep: str = "medoid"
    distance: str = "euclidean"
    p: float = 2.0
    max_iter: int = 100
    self_distance: str = "raw"  # raw: the published distance matrix; zero: exactly symmetric, zero diagonal
    sums: str = "float32"  # cluster costs: float32 sums as published, or exact float64 sums
    chunk: int = 16  # segments that share the published shift and stopping rule; 1: each segment alone
    sigma: float = 2.0
    # Spectral's options; the defaults are the published computation.
    normalize: bool = False  # L2-normalise tokens before the heat kernel
    self_loops: bool = True  # keep each token's edge to itself
    graph: str = "heat"  # heat: the dense heat-kernel graph; knn: its kNN-sparsified version
    knn: int = 10  # kNN graph's neighbours per token, used only when knn_per_frame is 0
    knn_per_frame: int = 5  # if > 0, the kNN graph's k = this x frames per segment (a token counts itself)
    solver: str = "svd"  # svd: the last K left singular vectors, as published; eigh: symmetric eigensolver
    rows: str = "eps"  # eps: rows divided by their norm + 1e-6, as published; unit: F.normalize
    sampling: str = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(
            s if isinstance(s, Stage) else Stage(**s) if isinstance(s, dict) else Stage(*s)
            for s in self.stages
        ))
        _one_of("algorithm", self.algorithm, ALGORITHMS)
        _one_of("keep", self.keep, KEEP)
        _one_of("distance", self.distance, DISTANCES)
        _one_of("graph", self.graph, GRAPHS)
        _one_of("self_distance", self.self_distance, SELF_DISTANCES)
        _one_of("sums", self.sums, SUMS)
        _one_of("solver", self.solver, SOLVERS)
        _one_of("rows", self.rows, ROWS)
        _one_of("sampling", self.sampling, SAMPLINGS)
        if self.algorithm == "none" and self.stages:
            raise ValueError("schedule 'none' takes no stages")
        if self.algorithm != "none" and not self.stages:
            raise ValueError(f"schedule {self.algorithm!r} needs at least one stage, e.g. {self.algorithm}@6:4x49")
        for stage in self.stages:
            if stage.block < 1 or stage.segments < 1 or stage.tokens < 1:
                raise ValueError(f"stage {stage}: block, segments and tokens must all be >= 1")
        blocks = [s.block for s in self.stages]
        if blocks != sorted(set(blocks)):
            raise ValueError(f"stage blocks must be strictly increasing, got {blocks}")
        if self.p <= 0 or self.max_iter < 1 or self.sigma <= 0 or self.knn < 1 or self.knn_per_frame < 0 or self.chunk < 1:
            raise ValueError("p and sigma must be > 0; max_iter, knn and chunk must be >= 1; knn_per_frame >= 0")
        if self.algorithm == "spectral" and self.knn_per_frame and self.knn != Schedule.knn:  # knn set, but unused
            raise ValueError(f"knn={self.knn} has no effect while knn_per_frame={self.knn_per_frame} sets the kNN graph's "
                             f"k: add knn_per_frame=0 to use a fixed knn")

    @property
    def reduces(self) -> bool:
        return bool(self.stages)

    def validate(self, *, layers: int, frames: int | None = None, tokens_per_frame: int | None = None) -> None:
        """Raise ValueError unless this schedule fits a ViT with ``layers`` blocks and
        ``tokens_per_frame`` patch tokens, run on ``frames`` frames per video (checked only when
        both are given)."""
        for stage in self.stages:
            if not 1 <= stage.block <= layers - 1:
                raise ValueError(f"stage {stage}: block {stage.block} is out of range: must be in [1, {layers - 1}] "
                                 f"for a transformer of {layers} blocks")
        if frames is None or tokens_per_frame is None:
            return
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        groups, tokens, unit = frames, tokens_per_frame, "frames"
        for stage in self.stages:
            if groups % stage.segments:
                valid = [d for d in range(1, groups + 1) if groups % d == 0]
                raise ValueError(f"stage {stage}: {stage.segments} segments do not divide the {groups} {unit} "
                                 f"available; valid segment counts: {valid}")
            available = groups // stage.segments * tokens
            if stage.tokens > available:
                raise ValueError(f"stage {stage}: {stage.tokens} tokens per segment is more than the "
                                 f"{available} available; valid range [1, {available}]")
            if self.algorithm == "pooling" and stage.tokens != tokens:
                raise ValueError(f"stage {stage}: pooling averages frames token-wise, so it keeps exactly "
                                 f"{tokens} tokens per segment, not {stage.tokens}")
            groups, tokens, unit = stage.segments, stage.tokens, "segments"

    def __str__(self) -> str:
        defaults = Schedule()
        options = ",".join(
            f"{name}={_format(getattr(self, name))}"
            for name in _OPTIONS if getattr(self, name) != getattr(defaults, name)
        )
        text = self.algorithm + (f"({options})" if options else "")
        if self.stages:
            text += "@" + ",".join(str(s) for s in self.stages)
        return text

    @classmethod
    def parse(cls, text: str) -> Schedule:
        match = _SCHEDULE.match(text.strip())
        if not match:
            raise ValueError(f"cannot parse schedule {text!r}: expected ALGORITHM[(option=value,...)][@BLOCK:SEGMENTSxTOKENS,...], "
                             f"e.g. 'kmedoids@6:4x49' or 'none'")
        options: dict[str, Any] = {}
        if match["options"]:
            for item in match["options"].split(","):
                name, _, value = item.partition("=")
                options[name.strip()] = value.strip()
        stages = []
        if match["stages"]:
            for item in match["stages"].split(","):
                stage = _STAGE.match(item.strip())
                if not stage:
                    raise ValueError(f"cannot parse stage {item!r} of schedule {text!r}: expected BLOCK:SEGMENTSxTOKENS, e.g. 6:4x49")
                stages.append(Stage(*map(int, stage.groups())))
        return cls.from_dict({"algorithm": match["algorithm"], "stages": stages, **options})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Schedule:
        """Build from a plain dict (a YAML sweep entry, JSON metadata); option values may be strings."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(types)
        if unknown:
            raise ValueError(f"unknown schedule option(s) {sorted(unknown)}: valid options are {sorted(types)}")
        converted = {}
        for name, value in values.items():
            caster = {"int": int, "float": float, "bool": _boolean}.get(types[name])
            try:
                converted[name] = caster(value) if caster else value
            except (TypeError, ValueError):
                raise ValueError(f"schedule option {name}={value!r} is not a valid {types[name]}") from None
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["stages"] = list(values["stages"])
        return values


def _one_of(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(valid)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() not in _BOOLEANS:
        raise ValueError(value)
    return _BOOLEANS[str(value).lower()]


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
