import itertools

import pytest
import torch

from benchmarks.bench_clustering import published_kmedoids
from centerclip.model import clustering

# Our exact-tie variant: exact zero diagonal, exact float64 sums, each segment alone. The defaults
# are the published rounding, checked against the official code's outputs in test_fidelity.py.
EXACT = {"self_distance": "zero", "sums": "float64", "chunk": 1}


def reference_kmedoids(points: torch.Tensor, k: int, max_iter: int = 100) -> list[int]:
    """The published algorithm written the plain way: one point set, Python loops, float64."""
    x = points.double()
    n = len(x)
    dist = [[float((x[i] - x[j]).norm()) for j in range(n)] for i in range(n)]
    medoids = [max(range(n), key=lambda i: float(x[i].norm()))]
    while len(medoids) < k:
        medoids.append(max((i for i in range(n) if i not in medoids), key=lambda i: min(dist[i][m] for m in medoids)))
    for _ in range(max_iter):
        clusters = {m: [] for m in medoids}
        for i in range(n):
            clusters[min(medoids, key=lambda m: dist[i][m])].append(i)
        # The published rule: smallest distance sum, lowest index on ties (every two-member cluster ties).
        moved = [min(members, key=lambda c: (round(sum(dist[c][j] for j in members), 9), c))
                 for members in clusters.values()]
        if moved == medoids:
            break
        medoids = moved
    return sorted(medoids)


def blobs(centres: torch.Tensor, per_blob: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_blob)
    points = centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=generator)
    order = torch.randperm(len(labels), generator=generator)
    return points[order], labels[order]


def test_kkz_init_follows_its_definition_on_hand_made_points():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 3.0], [4.0, 5.0], [-1.0, -1.0]])
    dist = clustering.pairwise_distances(points[None])
    # Largest norm: (5, 5). Farthest from it: (-1, -1). Then the point farthest from both: (0, 3)
    # is at min(5.39, 4.12) = 4.12, (1, 0) at min(6.40, 2.24); so (0, 3), then (4, 5)... by distance.
    chosen = clustering.kkz_init(points[None], dist, 4)[0].tolist()
    assert chosen[:3] == [2, 5, 3]
    nearest = {i: min(float(dist[0, i, c]) for c in chosen[:3]) for i in range(6) if i not in chosen[:3]}
    assert chosen[3] == max(nearest, key=nearest.get)


def test_kmedoids_matches_an_independent_implementation():
    generator = torch.Generator().manual_seed(3)
    random_tokens = torch.randn(3, 40, 16, generator=generator)
    frame = torch.randn(3, 1, 14, 16, generator=generator)
    redundant_tokens = (frame + 0.05 * torch.randn(3, 3, 14, 16, generator=generator)).flatten(1, 2)
    for tokens, k in [(random_tokens, 7), (redundant_tokens, 12)]:
        _, centres = clustering.kmedoids(tokens, k, **EXACT)
        for b in range(len(tokens)):
            assert centres[b].tolist() == reference_kmedoids(tokens[b], k)


def redundant(segments: int, frames: int, patches: int, dim: int, noise: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(segments, 1, patches, dim, generator=generator)
    return (frame + noise * torch.randn(segments, frames, patches, dim, generator=generator)).flatten(1, 2)


@pytest.mark.parametrize("kind", ["random", "redundant", "duplicated", "grid"])
def test_batched_kmedoids_gives_the_published_loops_medoids(kind):
    """Ours against the benchmark's per-segment loop of the published iteration, on the paper's
    shape (3 frames x 49 patches, K = 49) with tie-heavy inputs: exact duplicates (distance 0) and
    integer grids (many equal distances)."""
    generator = torch.Generator().manual_seed(7)
    tokens = {
        "random": lambda: torch.randn(6, 147, 64, generator=generator),
        "redundant": lambda: redundant(6, 3, 49, 64, 0.05, seed=7),
        "duplicated": lambda: redundant(6, 3, 49, 64, 0.0, seed=7),
        "grid": lambda: torch.randint(0, 3, (6, 147, 4), generator=generator).float(),
    }[kind]()
    _, ours = clustering.kmedoids(tokens, 49)
    assert torch.equal(ours, published_kmedoids(tokens, 49))


def test_two_member_clusters_keep_their_lowest_index():
    # Two far-apart pairs; KKZ seeds the larger-norm member of each (indices 3 and 1), and the
    # published rule then moves each medoid to the lower index of its pair: an exact tie.
    points = torch.tensor([[[10.0, 0.0], [10.5, 0.0], [-10.0, 0.0], [-10.5, 0.0]]])
    dist = clustering.pairwise_distances(points)
    assert clustering.kkz_init(points, dist, 2).sort(-1).values.tolist() == [[1, 3]]
    _, centres = clustering.kmedoids(points, 2, **EXACT)
    assert centres.tolist() == [[0, 2]]


def test_distances_are_exactly_symmetric_with_a_zero_diagonal():
    tokens = torch.randn(3, 100, 96, generator=torch.Generator().manual_seed(1)) * 30
    for distance in ("euclidean", "cosine"):
        dist = clustering.pairwise_distances(tokens, distance)
        assert torch.equal(dist, dist.mT)
        assert torch.all(dist.diagonal(dim1=1, dim2=2) == 0)


def test_kmedoids_result_is_a_fixed_point_and_labels_match_centres():
    tokens = torch.randn(4, 60, 8, generator=torch.Generator().manual_seed(0))
    assign, centres = clustering.kmedoids(tokens, 9)
    assert torch.all(centres[:, 1:] > centres[:, :-1]), "centres must be ascending token indices"
    for b in range(len(tokens)):
        dist = torch.cdist(tokens[b].double(), tokens[b].double())
        nearest = dist[:, centres[b]].argmin(1)
        assert torch.equal(nearest, assign[b])
        for j in range(9):
            members = (assign[b] == j).nonzero().squeeze(1)
            best = members[dist[members][:, members].sum(1).argmin()]
            assert int(best) == int(centres[b, j])


def test_kmedoids_is_deterministic_and_ignores_dtype_and_grad():
    tokens = torch.randn(2, 50, 12, generator=torch.Generator().manual_seed(5))
    first = clustering.kmedoids(tokens, 6)
    second = clustering.kmedoids(tokens.clone().requires_grad_(), 6)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    half = clustering.kmedoids(tokens.half(), 6)
    assert half[1].dtype == torch.long and half[1].shape == (2, 6)


@pytest.mark.parametrize("distance,p", [("euclidean", 1.0), ("euclidean", 3.0), ("cosine", 2.0)])
def test_kmedoids_other_distances_reach_a_fixed_point(distance, p):
    tokens = torch.randn(2, 30, 6, generator=torch.Generator().manual_seed(2))
    assign, centres = clustering.kmedoids(tokens, 5, distance=distance, p=p)
    dist = clustering.published_distances(tokens, distance, p)
    assert torch.equal(clustering.assign_to_medoids(dist, centres), assign)
    assert torch.equal(clustering.update_medoids(dist, assign, 5), centres)


def test_k_equal_to_n_keeps_every_token_even_with_duplicates():
    tokens = torch.randn(1, 5, 4).repeat(2, 2, 1)  # every token twice
    assign, centres = clustering.kmedoids(tokens, 10)
    assert centres.tolist() == [list(range(10))] * 2
    assert assign.tolist() == [list(range(10))] * 2


def test_max_iter_bounds_the_work():
    tokens = torch.randn(2, 80, 8, generator=torch.Generator().manual_seed(4))
    _, at_init = clustering.kmedoids(tokens, 10, max_iter=0)
    dist = clustering.published_distances(tokens)
    assert torch.equal(at_init, clustering.kkz_init(tokens, dist, 10).sort(-1).values)


@pytest.mark.parametrize("graph", ["heat", "knn"])
def test_spectral_separates_well_separated_blobs(graph):
    directions = torch.eye(8)[:4] * 10.0
    points, labels = blobs(directions, per_blob=12, spread=0.5)
    assign, centres = clustering.spectral(points[None], 4, graph=graph, knn=6, sigma=0.5)
    found = assign[0]
    for a, b in itertools.combinations(range(len(points)), 2):
        assert (found[a] == found[b]) == (labels[a] == labels[b])
    assert sorted(labels[centres[0]].tolist()) == [0, 1, 2, 3]


def test_knn_graph_counts_the_token_itself_only_with_self_loops():
    line = torch.tensor([[[0.0], [1.0], [3.0], [7.0]]])
    sq_dist = clustering.pairwise_distances(line).square()
    with_self = clustering.GRAPHS["knn"](sq_dist, 1.0, 2, True) > 0
    without = clustering.GRAPHS["knn"](sq_dist, 1.0, 2, False) > 0
    # With self-loops each token keeps itself and its nearest neighbour; 3 and 7 are each other's.
    assert with_self[0].int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    # Without, its two nearest others (0 chooses 1 and 3; 7 chooses 3 and 1), kept if either end chose.
    assert without[0].int().tolist() == [[0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 0]]


def test_spectral_schedule_options_reach_the_clustering():
    """reduce.py passes every option and k = knn_per_frame x frames per segment; a bare spectral
    schedule is the published computation, the variants differ."""
    from centerclip.model.reduce import reducer_for
    from centerclip.model.schedule import Schedule

    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(4, 2, 20, 16, generator=generator) * torch.rand(4, 2, 20, 1, generator=generator)
    tokens = patches.flatten(1, 2)

    def kept(centres):
        return tokens.gather(1, centres[..., None].expand(-1, -1, 16))

    bare = reducer_for(Schedule.parse("spectral@1:1x8"))(patches, 8)
    assert torch.equal(bare, kept(clustering.spectral(tokens, 8)[1]))
    variant = "spectral(graph=knn,solver=eigh,rows=unit,self_distance=zero,sums=float64,chunk=1)@1:1x8"
    ours = reducer_for(Schedule.parse(variant))(patches, 8)
    options = dict(graph="knn", knn=10, solver="eigh", rows="unit", self_distance="zero", sums="float64", chunk=1)
    assert torch.equal(ours, kept(clustering.spectral(tokens, 8, **options)[1]))
    assert not torch.equal(bare, ours)


def test_sparse_baselines():
    tokens = torch.randn(3, 20, 4)
    _, centres = clustering.uniform(tokens, 5)
    assert centres.tolist() == [[0, 4, 8, 12, 16]] * 3
    _, first = clustering.random(tokens, 5, seed=1)
    _, again = clustering.random(tokens, 5, seed=1)
    assert torch.equal(first, again) and torch.all(first[:, 1:] > first[:, :-1])
    assert len({tuple(row) for row in first.tolist()}) > 1, "each segment draws its own tokens"


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match=r"k=9 clusters .* \[1, 8\]"):
        clustering.kmedoids(torch.randn(1, 8, 3), 9)
    with pytest.raises(ValueError, match="shape"):
        clustering.kmedoids(torch.randn(8, 3), 2)
    with pytest.raises(ValueError, match="unknown distance"):
        clustering.kmedoids(torch.randn(1, 8, 3), 2, distance="manhattan")
    with pytest.raises(ValueError, match="unknown spectral graph"):
        clustering.spectral(torch.randn(1, 8, 3), 2, graph="full")
