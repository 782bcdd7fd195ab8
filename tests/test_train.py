import numpy as np
import pytest
import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.media.frames import FrameSet
from centerclip.train.loop import TrainConfig, batch_indices, latest_checkpoint, learning_rate_factor, train


def random_frameset(videos=12, frames=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (videos, 1, 1, 1, 3), dtype=np.uint8)
    noise = rng.integers(0, 40, (videos, frames, size, size, 3), dtype=np.uint8)
    captions = [[f"video number {i}", f"clip {i} of the set"] for i in range(videos)]
    return FrameSet(colours + noise, captions, [f"v{i}" for i in range(videos)])


def fresh_encoder(seed, schedule="none"):
    torch.manual_seed(seed)
    return VideoEncoder.create(EncoderConfig(model="centerclip-test", frames=4, schedule=Schedule.parse(schedule)))


CONFIG = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=3, log_every=1)


@pytest.mark.parametrize("schedule", ["none", "kmedoids@2:2x16"])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, schedule):
    data = random_frameset()
    reports = []
    uninterrupted = fresh_encoder(0, schedule)
    last = train(uninterrupted, data, CONFIG, output=tmp_path / "a", report=lambda m, f: reports.append(m))
    assert [m["step"] for m in reports] == [1, 2, 3, 4, 5, 6]
    assert latest_checkpoint(tmp_path / "a").name == "step_0000006"

    resumed = fresh_encoder(1, schedule)  # different initial weights: everything must come from the checkpoint
    again = train(resumed, data, CONFIG, output=tmp_path / "b", resume_from=tmp_path / "a" / "step_0000003")
    assert again["loss"] == pytest.approx(last["loss"], abs=1e-6)
    for (name, a), b in zip(uninterrupted.clip.state_dict().items(), resumed.clip.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_training_lowers_the_loss_and_checkpoints_restore_the_encoder(tmp_path):
    data = random_frameset(videos=8)
    encoder = fresh_encoder(0)
    losses = []
    train(encoder, data, TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, log_every=1),
          output=tmp_path, report=lambda m, f: losses.append(m["loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    restored = VideoEncoder.create(EncoderConfig(pretrained=str(latest_checkpoint(tmp_path))))
    assert restored.model_name == "centerclip-test" and restored.frames == 4
    assert torch.equal(restored.clip.visual.conv1.weight, encoder.clip.visual.conv1.weight)


def test_batches_walk_through_epochs_and_the_schedule_warms_up_then_decays():
    first_epoch = np.concatenate([batch_indices(step, 10, 3, seed=0) for step in range(3)])
    assert len(set(first_epoch.tolist())) == 9
    assert not np.array_equal(batch_indices(0, 10, 3, 0), batch_indices(3, 10, 3, 0))
    config = TrainConfig(steps=100, warmup_steps=10)
    factors = [learning_rate_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01


def test_bad_training_configs():
    with pytest.raises(ValueError, match="unknown precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="larger than the 3 training videos"):
        batch_indices(0, 3, 4, 0)
