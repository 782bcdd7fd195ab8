import open_clip
import pytest
import torch

import centerclip.model.openclip  # noqa: F401  (registers our model configs with open_clip)


@pytest.fixture(scope="session")
def tiny_clip():
    """The tiny random-weight CLIP of centerclip-test: 32 px frames, 4x4 = 16 patches, 4 blocks."""
    torch.manual_seed(0)
    return open_clip.create_model("centerclip-test").eval()


@pytest.fixture
def frames():
    """Two videos of 6 frames at 32 px, frames of a video correlated like real footage."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(2, 1, 3, 32, 32, generator=generator)
    return base + 0.3 * torch.randn(2, 6, 3, 32, 32, generator=generator)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (a start costs ~10 s)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A 20-video synthetic benchmark at 32 px (the test model's size), generated once."""
    from centerclip.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, 20, seed=0, size=32)
    return root
