"""Our default clustering against the official CenterCLIP code's own outputs, frozen in
tests/data/clustering_oracle.npz by benchmarks/clustering_oracle.py (its docstring says how)."""

import numpy as np
import pytest
import torch

from benchmarks.clustering_oracle import adjusted_rand_index
from centerclip.model import clustering

ORACLE = np.load(__file__.rsplit("/", 1)[0] + "/data/clustering_oracle.npz", allow_pickle=False)
K = 49


@pytest.fixture(autouse=True)
def oracle_threads():
    """The SVD rounds differently with another CPU thread count (so does the official code): run
    with the threads the oracle was made with."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(ORACLE["torch_threads"]))
    yield
    torch.set_num_threads(before)


def tokens(name: str) -> torch.Tensor:
    return torch.from_numpy(ORACLE[name].astype(np.float32))


def cost(x: torch.Tensor, medoids: torch.Tensor) -> float:
    """Total distance of the tokens to their nearest medoid, in float64."""
    x = x.double()
    return float(torch.cdist(x, x[medoids]).min(1).values.sum())


def check_differences_are_ties(x: torch.Tensor, ours: torch.Tensor, official: np.ndarray) -> int:
    """Segments where the medoid sets differ must cost the same (relative 1e-5): a near-tie that
    rounding decided, not another clustering. Returns how many are identical."""
    identical = 0
    for segment, (mine, theirs) in enumerate(zip(ours, torch.from_numpy(official))):
        if torch.equal(mine, theirs):
            identical += 1
            continue
        a, b = cost(x[segment], mine), cost(x[segment], theirs)
        assert abs(a - b) <= 1e-5 * max(a, b), f"segment {segment}: costs {a} and {b} are no tie"
    return identical


@pytest.mark.parametrize("name", ["random", "model"])
def test_default_kmedoids_gives_the_official_medoids(name):
    x = tokens(name)
    _, ours = clustering.kmedoids(x, K)
    identical = check_differences_are_ties(x, ours, ORACLE[f"{name}_kmedoids"])
    assert identical >= 0.95 * len(x), f"{identical}/{len(x)} identical medoid sets"


def test_redundant_tokens_are_tie_dominated_and_every_difference_is_a_tie():
    x = tokens("redundant")
    _, ours = clustering.kmedoids(x, K)
    identical = check_differences_are_ties(x, ours, ORACLE["redundant_kmedoids"])
    print(f"redundant tokens: {identical}/{len(x)} identical medoid sets")


def test_default_spectral_gives_the_official_selection_on_model_tokens():
    x = tokens("model")
    assign, ours = clustering.spectral(x, K)
    official = torch.from_numpy(ORACLE["model_spectral"])
    identical = int((ours == official).all(1).sum())
    assert identical >= 0.9 * len(x), f"{identical}/{len(x)} identical selections"
    floor_same, floor_ari = ORACLE["model_spectral_floor"]
    ari = np.mean([adjusted_rand_index(a, b) for a, b in zip(assign.numpy(), ORACLE["model_spectral_assign"])])
    assert ari >= floor_ari.mean(), f"ARI {ari:.3f} is below the official code's own rounding floor {floor_ari.mean():.3f}"


@pytest.mark.parametrize("name", ["random", "redundant"])
def test_default_spectral_on_synthetic_tokens(name):
    x = tokens(name)
    _, ours = clustering.spectral(x, K)
    assert int((ours == torch.from_numpy(ORACLE[f"{name}_spectral"])).all(1).sum()) >= 0.9 * len(x)
