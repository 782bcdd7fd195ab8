import open_clip
import pytest
import torch

import centerclip  # noqa: F401  (registers our model configs with open_clip)


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
