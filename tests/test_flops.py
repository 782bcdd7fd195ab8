import pytest
import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.model.flops import VisionShape, counted_flops, video_cost


@pytest.fixture(scope="module")
def default_architecture():
    torch.manual_seed(0)
    return VideoEncoder.create(EncoderConfig(model="centerclip-tiny", frames=12)).eval()


@pytest.mark.parametrize("schedule", [
    "none", "kmedoids@3:4x49", "kmedoids@3:6x60,5:2x49", "spectral@3:4x98", "pooling@3:4x49", "sparse@1:3x100",
])
def test_analytical_flops_match_the_flop_counter(default_architecture, schedule):
    encoder = default_architecture
    encoder.set_schedule(Schedule.parse(schedule))
    video = torch.randn(1, 12, 3, 112, 112)
    counted = counted_flops(lambda: encoder.encode_video(video))
    analytical = video_cost(VisionShape.of_model(encoder.clip), encoder.schedule, frames=12).flops
    assert abs(analytical - counted) / counted < 0.03


def test_vit_b_32_paper_setting_matches_the_flop_counter():
    torch.manual_seed(0)
    schedule = Schedule.parse("kmedoids@6:4x49")
    encoder = VideoEncoder.create(EncoderConfig(model="ViT-B-32", schedule=schedule)).eval()
    counted = counted_flops(lambda: encoder.encode_video(torch.randn(1, 12, 3, 224, 224)))
    shape = VisionShape.of_config("ViT-B-32")
    assert shape == VisionShape.of_model(encoder.clip)
    assert abs(video_cost(shape, schedule, 12).flops - counted) / counted < 0.03


def test_token_counts_and_savings():
    shape = VisionShape.of_config("ViT-B-32")
    full = video_cost(shape, Schedule(), 12)
    reduced = video_cost(shape, Schedule.parse("kmedoids@6:4x49"), 12)
    assert full.tokens == 12 * 12 * 50
    assert reduced.tokens == 6 * 12 * 50 + 6 * 4 * 50
    assert 1.4 < full.flops / reduced.flops < 1.6
    with pytest.raises(ValueError, match="do not divide"):
        video_cost(shape, Schedule.parse("kmedoids@6:5x49"), 12)
