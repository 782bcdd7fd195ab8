"""Batched token clustering on tensors.

Every algorithm maps tokens ``x`` of shape [B, N, D] to ``(assign, centres)``:
``centres`` [B, K] are token indices in ascending order (so kept tokens keep their spatial and
temporal order) and ``assign`` [B, N] gives, for every token, the position in ``centres`` of its
cluster. Selection is discrete, so it runs in fp32 without gradient whatever the model's
precision; gradients reach the tokens the caller gathers with ``centres``.

Memory is O(B N^2): one pairwise-distance matrix per batch, plus [B, N, K] work tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Clustering = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _minkowski(x: torch.Tensor, p: float) -> torch.Tensor:
    if p != 2.0:
        return torch.cdist(x, x, p=p)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b in one batched GEMM: about 3x faster than cdist here, and
    # without the [B, N, D + 2] copies cdist makes, which dominated the kernel's peak memory.
    squared_norms = torch.linalg.vector_norm(x, dim=-1).square()
    squared = torch.baddbmm(squared_norms[:, :, None] + squared_norms[:, None, :], x, x.mT, alpha=-2.0)
    return squared.clamp_min_(0.0).sqrt_()


def _cosine(x: torch.Tensor, p: float) -> torch.Tensor:
    unit = F.normalize(x, dim=-1)
    return (1.0 - unit @ unit.mT).clamp_min(0.0)


DISTANCES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "euclidean": _minkowski,
    "cosine": _cosine,
}


def _check_input(x: torch.Tensor, k: int) -> None:
    if x.ndim != 3:
        raise ValueError(f"tokens must have shape [B, N, D], got {tuple(x.shape)}")
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k={k} clusters is out of range: must be in [1, {x.shape[1]}] (tokens available)")


def pairwise_distances(x: torch.Tensor, distance: str = "euclidean", p: float = 2.0) -> torch.Tensor:
    """[B, N, D] -> [B, N, N] distances, exact zeros on the diagonal."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}: choose one of {sorted(DISTANCES)}")
    dist = DISTANCES[distance](x, p)
    # The GEMM path is not exactly symmetric and leaves rounding noise on the diagonal: make
    # d(a, b) == d(b, a) bit for bit (so two-member clusters tie exactly) and d(a, a) == 0.
    dist = (dist + dist.mT).mul_(0.5)
    dist.diagonal(dim1=1, dim2=2).zero_()
    return dist


def kkz_init(x: torch.Tensor, dist: torch.Tensor, k: int) -> torch.Tensor:
    """KKZ seeding: the token of largest L2 norm, then repeatedly the token farthest from its
    nearest chosen centre. Returns [B, K] indices in the order they were chosen."""
    batch, n = dist.shape[:2]
    rows = torch.arange(batch, device=x.device)
    centres = torch.empty(batch, k, dtype=torch.long, device=x.device)
    centres[:, 0] = x.norm(dim=-1).argmax(-1)
    nearest = dist[rows, centres[:, 0]].clone()
    # Chosen tokens are marked below every real distance so duplicates of a chosen token (distance
    # 0) can still be picked when k exceeds the number of distinct tokens, but a token never twice.
    nearest[rows, centres[:, 0]] = -1.0
    # KKZ is greedy by definition: centre j depends on centres < j, so this loop is inherent.
    for j in range(1, k):
        chosen = nearest.argmax(-1)
        centres[:, j] = chosen
        nearest = torch.minimum(nearest, dist[rows, chosen])
        nearest[rows, chosen] = -1.0
    return centres


def assign_to_medoids(dist: torch.Tensor, medoids: torch.Tensor) -> torch.Tensor:
    """Nearest medoid of every token, [B, N]; a medoid always belongs to its own cluster, even
    when another medoid is a duplicate token at distance 0."""
    n, k = dist.shape[1], medoids.shape[1]
    to_medoids = dist.gather(2, medoids[:, None, :].expand(-1, n, -1))
    assign = to_medoids.argmin(-1)
    own = torch.arange(k, device=dist.device).expand_as(medoids)
    return assign.scatter(1, medoids, own)


def update_medoids(dist: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    """[B, K] new medoids: in every cluster, the member with the smallest sum of distances to the
    other members, the lowest token index on exact ties (the published rule).

    The sums are accumulated in float64: a sum of float32 distances is then exact, so which sums
    tie does not depend on the order of summation, and the rule means what it says."""
    batch, n = assign.shape
    same_cluster = assign[:, :, None] == assign[:, None, :]  # [B, N, N]
    cost = torch.where(same_cluster, dist, 0.0).sum(-1, dtype=torch.float64)  # each token's cost as its cluster's medoid
    best_cost = cost.new_full((batch, k), float("inf")).scatter_reduce(1, assign, cost, "amin")
    token = torch.arange(n, device=dist.device).expand(batch, n)
    is_best = cost == best_cost.gather(1, assign)
    return assign.new_full((batch, k), n).scatter_reduce(1, assign, token.masked_fill(~is_best, n), "amin")


def _sorted(assign: torch.Tensor, medoids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centres, order = medoids.sort(dim=-1)
    position = order.argsort(dim=-1)  # old cluster label -> its position among sorted centres
    return position.gather(1, assign), centres


@torch.no_grad()
def kmedoids(
    x: torch.Tensor,
    k: int,
    *,
    distance: str = "euclidean",
    p: float = 2.0,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-medoids with KKZ initialisation; stops when medoids stop moving or after ``max_iter``
    updates (ties can make the published rule cycle, so the limit is the guard)."""
    _check_input(x, k)
    x = x.detach().float()
    dist = pairwise_distances(x, distance, p)
    medoids = kkz_init(x, dist, k)
    assign = assign_to_medoids(dist, medoids)
    # Each segment iterates until its own medoids stop moving: one that cycles on ties (until
    # max_iter) costs only its own work, not the whole batch's.
    active = torch.arange(len(x), device=x.device)
    for _ in range(max_iter):
        moved = update_medoids(dist[active], assign[active], k)
        changed = (moved != medoids[active]).any(1)
        active, moved = active[changed], moved[changed]
        if not len(active):
            break
        medoids[active] = moved
        assign[active] = assign_to_medoids(dist[active], moved)
    return _sorted(assign, medoids)


def _heat_affinity(sq_dist: torch.Tensor, sigma: float, knn: int, self_loops: bool) -> torch.Tensor:
    affinity = torch.exp(-sq_dist / (2.0 * sigma**2))
    if not self_loops:
        affinity.diagonal(dim1=1, dim2=2).zero_()
    return affinity


def _knn_affinity(sq_dist: torch.Tensor, sigma: float, knn: int, self_loops: bool) -> torch.Tensor:
    """Each token's ``knn`` strongest edges, kept if either end chose them. With self-loops the
    token's own edge (affinity 1, the strongest) counts as one of its ``knn``, as published."""
    affinity = _heat_affinity(sq_dist, sigma, knn, self_loops)
    available = affinity.shape[-1] - (0 if self_loops else 1)
    neighbours = affinity.topk(min(knn, available), dim=-1).indices
    keep = torch.zeros_like(affinity, dtype=torch.bool).scatter_(-1, neighbours, True)
    return affinity * (keep | keep.mT)


GRAPHS = {"heat": _heat_affinity, "knn": _knn_affinity}


@torch.no_grad()
def spectral(
    x: torch.Tensor,
    k: int,
    *,
    sigma: float = 2.0,
    graph: str = "heat",
    knn: int = 10,
    normalize: bool = True,
    self_loops: bool = False,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral clustering: heat-kernel affinity (optionally kNN-sparsified), symmetric normalised
    Laplacian, its K smallest eigenvectors row-normalised, then k-medoids on those rows.

    With ``normalize`` the tokens are L2-normalised first, so ``sigma`` is measured on the unit
    sphere and does not depend on the scale of the transformer's residual stream. The published
    variant clusters raw tokens (``normalize=False``) on a ``knn`` graph that keeps ``self_loops``;
    it is a Schedule's default (with k = 5 x frames per segment), these keyword defaults are ours."""
    _check_input(x, k)
    if graph not in GRAPHS:
        raise ValueError(f"unknown spectral graph {graph!r}: choose one of {sorted(GRAPHS)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = x.detach().float()
    if normalize:
        x = F.normalize(x, dim=-1)
    sq_dist = pairwise_distances(x).square()
    affinity = GRAPHS[graph](sq_dist, sigma, knn, self_loops)
    inv_sqrt_degree = affinity.sum(-1).clamp_min(1e-12).rsqrt()
    normalised = inv_sqrt_degree[:, :, None] * affinity * inv_sqrt_degree[:, None, :]
    identity = torch.eye(x.shape[1], device=x.device, dtype=x.dtype)
    _, eigenvectors = torch.linalg.eigh(identity - normalised)  # eigenvalues ascending
    embedding = F.normalize(eigenvectors[..., :k], dim=-1)
    return kmedoids(embedding, k, max_iter=max_iter)


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    chosen = x.gather(1, centres[..., None].expand(-1, -1, x.shape[-1]))
    return torch.cdist(x, chosen).argmin(-1)


@torch.no_grad()
def uniform(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse baseline: k tokens evenly spaced in index order; each token joins the nearest."""
    _check_input(x, k)
    x = x.detach().float()
    batch, n = x.shape[:2]
    centres = (torch.arange(k, device=x.device) * n // k).expand(batch, k)
    return _nearest(x, centres), centres.contiguous()


@torch.no_grad()
def random(x: torch.Tensor, k: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse baseline: k tokens drawn at random (seeded, so evaluation is repeatable)."""
    _check_input(x, k)
    x = x.detach().float()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    scores = torch.rand(x.shape[:2], generator=generator, device=x.device)
    centres = scores.argsort(dim=-1)[:, :k].sort(dim=-1).values
    return _nearest(x, centres), centres


ALGORITHMS: dict[str, Clustering] = {
    "kmedoids": kmedoids,
    "spectral": spectral,
    "uniform": uniform,
    "random": random,
}
