import copy

import open_clip
import pytest
import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.model import patch


def encoder_for(clip, schedule="none", frames=6):
    tokenizer = open_clip.get_tokenizer("centerclip-test")
    return VideoEncoder(copy.deepcopy(clip), tokenizer, schedule=Schedule.parse(schedule), frames=frames)


def open_clip_mean_p(clip, frames):
    """Unpatched open_clip meanP: per-frame CLS embedding, normalise, mean over frames, normalise."""
    per_frame = clip.encode_image(frames.flatten(0, 1), normalize=True).view(*frames.shape[:2], -1)
    return torch.nn.functional.normalize(per_frame.mean(1), dim=-1)


def sequence_first(clip):
    """The same weights run in open_clip's older LND token layout (batch_first=False)."""
    clip = copy.deepcopy(clip)
    clip.visual.transformer.batch_first = False
    for block in clip.visual.transformer.resblocks:
        block.attn.batch_first = False
    return clip


@torch.no_grad()
def test_schedule_none_equals_open_clip_mean_p(tiny_clip, frames):
    expected = open_clip_mean_p(tiny_clip, frames)
    assert torch.allclose(encoder_for(tiny_clip).encode_video(frames), expected, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("algorithm", ["kmedoids", "spectral", "sparse", "kmedoids(keep=mean)"])
def test_all_tokens_with_one_frame_per_segment_is_the_identity(tiny_clip, frames, algorithm):
    expected = open_clip_mean_p(tiny_clip, frames)
    encoder = encoder_for(tiny_clip, f"{algorithm}@2:6x16")
    assert torch.allclose(encoder.encode_video(frames), expected, atol=1e-5)


@torch.no_grad()
def test_pooling_one_frame_per_segment_is_the_identity(tiny_clip, frames):
    encoder = encoder_for(tiny_clip, "pooling@1:6x16")
    assert torch.allclose(encoder.encode_video(frames), open_clip_mean_p(tiny_clip, frames), atol=1e-5)


@torch.no_grad()
def test_patch_then_remove_equals_never_patched(tiny_clip, frames):
    clip = copy.deepcopy(tiny_clip)
    classes = [type(block) for block in clip.visual.transformer.resblocks]
    attributes = [set(vars(block)) for block in clip.visual.transformer.resblocks]
    patch.apply(clip, Schedule.parse("kmedoids@1:3x20,3:1x10"))
    assert [type(b) for b in clip.visual.transformer.resblocks] != classes
    patch.remove(clip)
    assert [type(b) for b in clip.visual.transformer.resblocks] == classes
    assert [set(vars(b)) for b in clip.visual.transformer.resblocks] == attributes
    assert not hasattr(clip.visual, "_centerclip_state")
    state, original = clip.state_dict(), tiny_clip.state_dict()
    assert all(torch.equal(state[name], original[name]) for name in original)
    images = frames.flatten(0, 1)
    assert torch.equal(clip.encode_image(images), tiny_clip.encode_image(images))


@torch.no_grad()
def test_apply_twice_equals_apply_once(tiny_clip, frames):
    once = encoder_for(tiny_clip, "kmedoids@2:2x20")
    twice = encoder_for(tiny_clip, "kmedoids@2:2x20")
    twice.set_schedule(Schedule.parse("kmedoids@2:2x20"))
    block = twice.visual.transformer.resblocks[1]
    assert type(block).__mro__.count(type(block).__mro__[1]) == 1, "the block class is wrapped once"
    assert torch.equal(once.encode_video(frames), twice.encode_video(frames))
    twice.set_schedule(Schedule())
    assert torch.allclose(twice.encode_video(frames), open_clip_mean_p(tiny_clip, frames), atol=1e-5)


@torch.no_grad()
# The two layouts' tokens differ in their last bits; the published rounding (the default) lets
# such bits decide near-ties, so the cosine case uses the exact-tie variant.
@pytest.mark.parametrize("schedule", ["none", "kmedoids@2:2x20",
                                      "kmedoids(distance=cosine,self_distance=zero,sums=float64)@1:3x24,3:1x12",
                                      "pooling@2:3x16"])
def test_both_token_layouts_give_the_same_result(tiny_clip, frames, schedule):
    batch_first = encoder_for(tiny_clip, schedule).encode_video(frames)
    sequence_first_result = encoder_for(sequence_first(tiny_clip), schedule).encode_video(frames)
    assert torch.allclose(batch_first, sequence_first_result, atol=1e-5)


@torch.no_grad()
def test_reduction_changes_the_embedding_and_keeps_shapes(tiny_clip, frames):
    encoder = encoder_for(tiny_clip, "kmedoids@2:2x12")
    reduced = encoder.encode_video(frames)
    assert reduced.shape == (2, 32)
    assert torch.allclose(reduced.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(reduced, open_clip_mean_p(tiny_clip, frames), atol=1e-3)


@torch.no_grad()
def test_segments_follow_the_frames_of_each_video(tiny_clip, frames):
    """Videos are reduced independently: a video's embedding does not depend on its batch mates."""
    encoder = encoder_for(tiny_clip, "kmedoids@1:3x20,3:1x10")
    together = encoder.encode_video(frames)
    alone = torch.cat([encoder.encode_video(frames[i:i + 1]) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_training_step_with_the_patch_reaches_the_patch_embedding(tiny_clip, frames):
    encoder = encoder_for(tiny_clip, "kmedoids@2:2x12").train()
    video = encoder.encode_video(frames)
    text = encoder.encode_text(["a red circle moves left", "a blue square appears"])
    loss = encoder.contrastive_loss(text, video)
    loss.backward()
    gradient = encoder.visual.conv1.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    optimizer.step()
    assert not torch.equal(encoder.visual.conv1.weight, tiny_clip.visual.conv1.weight)


def test_gradient_checkpointing_with_the_patch(tiny_clip, frames):
    encoder = encoder_for(tiny_clip, "kmedoids@2:2x12").train()
    encoder.clip.set_grad_checkpointing(True)
    encoder.encode_video(frames).sum().backward()
    assert encoder.visual.conv1.weight.grad.abs().sum() > 0


def test_contrastive_loss_is_symmetric_infonce():
    logits = torch.tensor([[5.0, 1.0], [0.0, 3.0]])
    from centerclip.model.encoder import contrastive_loss
    rows = torch.nn.functional.cross_entropy(logits, torch.arange(2))
    columns = torch.nn.functional.cross_entropy(logits.T, torch.arange(2))
    assert torch.isclose(contrastive_loss(logits), (rows + columns) / 2)


@pytest.mark.parametrize("schedule,message", [
    ("kmedoids@2:2x49", r"49 tokens per segment is more than the 48 available; valid range \[1, 48\]"),
    ("kmedoids@2:4x16", r"4 segments do not divide the 6 frames"),
    ("kmedoids@4:2x16", r"block 4 is out of range: must be in \[1, 3\]"),
])
def test_bad_schedules_raise_value_errors(tiny_clip, schedule, message):
    with pytest.raises(ValueError, match=message):
        encoder_for(tiny_clip, schedule)


def test_bad_frames_raise_value_errors(tiny_clip, frames):
    encoder = encoder_for(tiny_clip, "kmedoids@2:3x16")
    with pytest.raises(ValueError, match="3 segments do not divide the 4 frames"):
        encoder.encode_video(frames[:, :4])
    with pytest.raises(ValueError, match="expects 32x32"):
        encoder.encode_video(torch.zeros(1, 6, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        encoder.encode_video(frames[0])


@torch.no_grad()
def test_vit_b_32_config_with_random_weights():
    """The paper's setting on the real ViT-B-32 architecture: 12 frames, 4 x 49 after block 6."""
    torch.manual_seed(0)
    encoder = VideoEncoder.create(EncoderConfig(model="ViT-B-32", schedule=Schedule.parse("kmedoids@6:4x49"))).eval()
    video = torch.randn(1, 12, 3, 224, 224)
    reduced = encoder.encode_video(video)
    encoder.set_schedule(Schedule.parse("kmedoids@6:12x49"))  # one frame per segment, every token
    full = encoder.encode_video(video)
    assert reduced.shape == full.shape == (1, 512)
    assert torch.allclose(full, open_clip_mean_p(encoder.clip, video), atol=1e-5)
