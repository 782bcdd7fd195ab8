"""Batched token clustering on tensors.

Every algorithm maps tokens ``x`` of shape [B, N, D] to ``(assign, centres)``:
``centres`` [B, K] are token indices in ascending order (so kept tokens keep their spatial and
temporal order) and ``assign`` [B, N] gives, for every token, the position in ``centres`` of its
cluster. Selection is discrete, so it runs in fp32 without gradient whatever the model's
precision; gradients reach the tokens the caller gathers with ``centres``.

The defaults are the published computation (mzhaoshuai/CenterCLIP, ``modules/cluster/``:
``batch_fast_kmedoids_with_split`` and ``batch_spectral_clustering`` as its ``TokenClusterInter``
calls them with ``params.py``'s defaults), step by step in the same order and float32 precision,
so the same tokens give the same medoids. Near-ties are common (redundant frames, two-member
clusters), and there the published rounding decides: its distance matrix keeps ``torch.cdist``'s
rounding noise on the diagonal, is shifted below zero by the largest distance of a chunk of 16
segments, and its cluster costs are float32 sums. Our earlier variants stay as named options:

- ``self_distance="zero"``: an exactly symmetric matrix with an exact zero diagonal (a GEMM, about
  3x faster than cdist, and no shift), so exact ties are real ties;
- ``sums="float64"``: cluster costs summed exactly, independent of summation order;
- ``chunk``: how many segments share the shift and the stopping rule (the published code splits
  the batch into chunks of 16 for ViT-B/32); ``chunk=1`` makes each segment independent of the
  others in its batch;
- spectral ``graph="knn"``, ``solver="eigh"`` (I - D^-1/2 W D^-1/2 by ``eigh``, the published
  code takes the last K left singular vectors of D^-1/2 (D - W) D^-1/2), ``rows="unit"``
  (``F.normalize``; the published code divides by the norm + 1e-6), ``normalize`` (unit tokens
  first) and ``self_loops=False``.

Memory is O(B N^2): one pairwise-distance matrix per chunk, plus [B, N, K] work tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .schedule import ROWS, SELF_DISTANCES, SOLVERS, SUMS, _one_of

Clustering = Callable[..., tuple[torch.Tensor, torch.Tensor]]

CHUNK = 16  # segments per chunk, as the published TokenClusterInter splits batches for ViT-B/32
STOP_SHIFT = 1e-5  # the published stopping threshold (params.py --cluster_threshold)


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
    """[B, N, N] distances, exactly symmetric with exact zeros on the diagonal (``self_distance="zero"``)."""
    _one_of("distance", distance, tuple(DISTANCES))
    dist = DISTANCES[distance](x, p)
    # The GEMM path is not exactly symmetric and leaves rounding noise on the diagonal: make
    # d(a, b) == d(b, a) bit for bit (so two-member clusters tie exactly) and d(a, a) == 0.
    dist = (dist + dist.mT).mul_(0.5)
    dist.diagonal(dim1=1, dim2=2).zero_()
    return dist


def published_distances(x: torch.Tensor, distance: str = "euclidean", p: float = 2.0) -> torch.Tensor:
    """[B, N, N] as the published k-medoids computes it (``self_distance="raw"``): ``torch.cdist``'s
    own matrix (its diagonal is rounding noise, not zero), every entry shifted below zero by the
    batch's largest distance + 1 (so a cluster's cost is negative and an outsider's 0 never wins),
    and 1 more subtracted on the diagonal (so each token is nearest to itself)."""
    _one_of("distance", distance, tuple(DISTANCES))
    if distance == "euclidean":
        dist = torch.cdist(x, x, p=p)
    else:
        unit = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        dist = 1.0 - torch.bmm(unit, unit.mT)
    dist = dist - dist.max() - 1.0
    dist.diagonal(dim1=1, dim2=2).sub_(1.0)
    return dist


def kkz_init(x: torch.Tensor, dist: torch.Tensor, k: int) -> torch.Tensor:
    """KKZ seeding: the token of largest L2 norm, then repeatedly the token farthest from its
    nearest chosen centre (distances read along the chosen centres' rows; the first on ties).
    Returns [B, K] indices in the order they were chosen."""
    batch = dist.shape[0]
    rows = torch.arange(batch, device=x.device)
    centres = torch.empty(batch, k, dtype=torch.long, device=x.device)
    centres[:, 0] = x.norm(dim=-1).argmax(-1)
    nearest = dist[rows, centres[:, 0]].clone()
    # A chosen token is never chosen again, even when duplicates of it (distance 0) are left.
    nearest[rows, centres[:, 0]] = -torch.inf
    # KKZ is greedy by definition: centre j depends on centres < j, so this loop is inherent.
    for j in range(1, k):
        chosen = nearest.argmax(-1)
        centres[:, j] = chosen
        nearest = torch.minimum(nearest, dist[rows, chosen])
        nearest[rows, chosen] = -torch.inf
    return centres


def assign_to_medoids(dist: torch.Tensor, medoids: torch.Tensor, *, own: bool = False) -> torch.Tensor:
    """Nearest medoid of every token, [B, N], read along the medoids' rows, the first listed on
    ties. ``own``: a medoid belongs to its own cluster even when another medoid is a duplicate at
    distance 0 (the published matrix's diagonal bonus does that by itself)."""
    n = dist.shape[-1]
    from_medoids = dist.gather(1, medoids[:, :, None].expand(-1, -1, n))  # [B, K, N]
    assign = from_medoids.argmin(1)
    if not own:
        return assign
    return assign.scatter(1, medoids, torch.arange(medoids.shape[1], device=dist.device).expand_as(medoids))


def update_medoids(dist: torch.Tensor, assign: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, K] new medoids: in every cluster, the member with the smallest sum of distances to the
    members (its row of ``dist``), the lowest token index on equal sums (the published rule).
    Sums are taken in ``dtype``: float32 as published, float64 to make them exact."""
    batch, n = assign.shape
    same_cluster = assign[:, :, None] == assign[:, None, :]  # [B, N, N]
    cost = torch.where(same_cluster, dist, 0.0).sum(-1, dtype=dtype)  # each token's cost as its cluster's medoid
    best_cost = cost.new_full((batch, k), float("inf")).scatter_reduce(1, assign, cost, "amin")
    token = torch.arange(n, device=dist.device).expand(batch, n)
    is_best = cost == best_cost.gather(1, assign)
    return assign.new_full((batch, k), n).scatter_reduce(1, assign, token.masked_fill(~is_best, n), "amin")


def _medoid_shift(x: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[B]: how far each segment's medoids moved, the sum over clusters of the L2 distance."""
    def at(index: torch.Tensor) -> torch.Tensor:
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))

    return (at(after) - at(before)).square().sum(-1).sqrt().sum(-1)


def _kmedoids_chunk(x: torch.Tensor, k: int, distance: str, p: float, max_iter: int, self_distance: str,
                    dtype: torch.dtype, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    zero = self_distance == "zero"
    dist = pairwise_distances(x, distance, p) if zero else published_distances(x, distance, p)
    medoids = kkz_init(x, dist, k)
    # The published rule stops the whole chunk once its mean medoid shift is below the threshold.
    # A segment whose medoids did not move is at a fixed point (its shift stays exactly 0), so it
    # leaves the work set: one that cycles on ties costs only its own work, and the step at which
    # the chunk stops, hence every result, is the published one.
    shift = x.new_zeros(len(x))
    active = torch.arange(len(x), device=x.device)
    for _ in range(max_iter):
        if not len(active):
            break
        before, active_dist = medoids[active], dist[active]  # one copy of the active segments' distances
        after = update_medoids(active_dist, assign_to_medoids(active_dist, before, own=zero), k, dtype)
        shift[active] = _medoid_shift(x[active], before, after)
        medoids[active] = after
        if shift.mean() < threshold:
            break
        active = active[(after != before).any(1)]
        shift.zero_()
    centres = medoids.sort(dim=-1).values
    return assign_to_medoids(dist, centres, own=zero), centres


@torch.no_grad()
def kmedoids(
    x: torch.Tensor,
    k: int,
    *,
    distance: str = "euclidean",
    p: float = 2.0,
    max_iter: int = 100,
    self_distance: str = "raw",
    sums: str = "float32",
    chunk: int = CHUNK,
    threshold: float = STOP_SHIFT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-medoids with KKZ initialisation, the batch taken ``chunk`` segments at a time; a chunk
    stops when its mean medoid shift falls below ``threshold`` or after ``max_iter`` updates (ties
    can make the rule cycle, so the limit is the guard). See the module docstring for the options."""
    _check_input(x, k)
    _one_of("self_distance", self_distance, SELF_DISTANCES)
    _one_of("sums", sums, SUMS)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 segment, got {chunk}")
    dtype = torch.float64 if sums == "float64" else torch.float32
    x = x.detach().float()
    parts = [_kmedoids_chunk(part, k, distance, p, max_iter, self_distance, dtype, threshold) for part in x.split(chunk)]
    return torch.cat([a for a, _ in parts]), torch.cat([c for _, c in parts])


def published_squared_distances(x: torch.Tensor) -> torch.Tensor:
    """[B, N, N] squared L2 distances as the published spectral code computes them: one batched
    GEMM, |a|^2 added last, no clamp (entries near 0, the diagonal too, are rounding noise)."""
    squared_norms = x.square().sum(-1, keepdim=True)
    return torch.baddbmm(squared_norms.mT, x, x.mT, alpha=-2).add(squared_norms)


def _heat_affinity(sq_dist: torch.Tensor, sigma: float, knn: int, self_loops: bool) -> torch.Tensor:
    affinity = torch.exp(-1.0 * sq_dist / (2 * sigma**2))
    if not self_loops:
        affinity.diagonal(dim1=1, dim2=2).zero_()
    return affinity


def _knn_affinity(sq_dist: torch.Tensor, sigma: float, knn: int, self_loops: bool) -> torch.Tensor:
    """Each token's ``knn`` strongest edges (with every edge as strong as the knn-th: ties are
    kept), kept if either end chose them. With self-loops the token's own edge counts as one of
    its ``knn``, as published."""
    affinity = _heat_affinity(sq_dist, sigma, knn, self_loops)
    available = affinity.shape[-1] - (0 if self_loops else 1)
    kth = affinity.topk(max(min(knn, available), 1), dim=-1).values[..., -1:]
    keep = affinity >= kth
    return affinity * (keep | keep.mT)


GRAPHS = {"heat": _heat_affinity, "knn": _knn_affinity}


def _spectral_embedding(affinity: torch.Tensor, k: int, solver: str) -> torch.Tensor:
    """[B, N, K]: the eigenvectors of the K smallest eigenvalues of the normalised Laplacian."""
    if solver == "svd":
        # The published steps: L_sym = D^-1/2 (D - W) D^-1/2 (its two products by a diagonal matrix
        # are exact, so elementwise scaling gives the same bits), then an SVD: L_sym is symmetric
        # positive semi-definite, so its singular values are its eigenvalues, in descending order.
        degree = affinity.sum(-1)
        scale = degree.pow(-0.5)
        laplacian = torch.diag_embed(degree) - affinity
        left, singular, right = torch.linalg.svd(scale[:, :, None] * laplacian * scale[:, None, :], full_matrices=False)
        # Then the published sign correction (Bro, "Sign correction in SVD and PCA"): each singular
        # vector takes the sign of sum(sign(s v) (s v)^2) over its right vector. k-medoids on the rows
        # would not see a flip, but a zero singular value gives sign 0 and zeroes the column: with
        # raw tokens and sigma 2 the graph is often nearly the identity, and then that decides.
        weighted = singular[:, -k:, None] * right[:, -k:, :]
        sign = (weighted.sign() * weighted.square()).sum(-1).sign()
        return left[..., -k:] * sign[:, None, :]
    inv_sqrt_degree = affinity.sum(-1).clamp_min(1e-12).rsqrt()
    normalised = inv_sqrt_degree[:, :, None] * affinity * inv_sqrt_degree[:, None, :]
    identity = torch.eye(affinity.shape[-1], device=affinity.device, dtype=affinity.dtype)
    _, eigenvectors = torch.linalg.eigh(identity - normalised)  # eigenvalues ascending
    return eigenvectors[..., :k]


@torch.no_grad()
def spectral(
    x: torch.Tensor,
    k: int,
    *,
    sigma: float = 2.0,
    graph: str = "heat",
    knn: int = 10,
    normalize: bool = False,
    self_loops: bool = True,
    solver: str = "svd",
    rows: str = "eps",
    self_distance: str = "raw",
    sums: str = "float32",
    chunk: int = CHUNK,
    max_iter: int = 100,
    threshold: float = STOP_SHIFT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral clustering: heat-kernel affinity on squared L2 distances (optionally kNN-
    sparsified), the symmetric normalised Laplacian, its K smallest eigenvectors with each row
    scaled to unit length, then k-medoids on those rows. The defaults are the published
    computation (dense heat kernel, sigma 2, raw tokens, self-loops); see the module docstring."""
    _check_input(x, k)
    _one_of("spectral graph", graph, tuple(GRAPHS))
    _one_of("solver", solver, SOLVERS)
    _one_of("rows", rows, ROWS)
    _one_of("self_distance", self_distance, SELF_DISTANCES)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = x.detach().float()
    if normalize:
        x = F.normalize(x, dim=-1)
    sq_dist = published_squared_distances(x) if self_distance == "raw" else pairwise_distances(x).square()
    embedding = _spectral_embedding(GRAPHS[graph](sq_dist, sigma, knn, self_loops), k, solver)
    if rows == "eps":
        embedding = embedding / (embedding.norm(p=2, dim=-1, keepdim=True) + 1e-6)
    else:
        embedding = F.normalize(embedding, dim=-1)
    return kmedoids(embedding, k, max_iter=max_iter, self_distance=self_distance, sums=sums, chunk=chunk,
                    threshold=threshold)


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
