import os
import pickle
import time

import pytest
import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.model import checkpoint


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return VideoEncoder.create(EncoderConfig(model="centerclip-test", schedule=Schedule.parse("kmedoids@2:2x20"), frames=6))


def test_checkpoint_restores_model_schedule_and_frames(encoder, tmp_path, frames):
    meta = {"model": "centerclip-test", "schedule": str(encoder.schedule), "frames": 6, "step": 3, "metrics": {"R@1": 1.0}}
    checkpoint.save_checkpoint(tmp_path / "run", encoder.clip, meta)
    restored = VideoEncoder.create(EncoderConfig(pretrained=str(tmp_path / "run")))
    assert restored.model_name == "centerclip-test" and restored.frames == 6
    assert restored.schedule == encoder.schedule
    with torch.no_grad():
        assert torch.equal(restored.encode_video(frames), encoder.encode_video(frames))
    overridden = VideoEncoder.create(EncoderConfig(pretrained=str(tmp_path / "run" / "model.safetensors"),
                                                   schedule=Schedule()))
    assert overridden.schedule == Schedule()
    with pytest.raises(ValueError, match="holds a centerclip-test model, not ViT-B-32"):
        VideoEncoder.create(EncoderConfig(model="ViT-B-32", pretrained=str(tmp_path / "run")))


def test_plain_torch_weights_file_with_ddp_prefix(encoder, tmp_path):
    state = {f"module.{name}": tensor for name, tensor in encoder.clip.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "weights.pt")
    loaded = VideoEncoder.create(EncoderConfig(model="centerclip-test", pretrained=str(tmp_path / "weights.pt")))
    assert torch.equal(loaded.clip.visual.conv1.weight, encoder.clip.visual.conv1.weight)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_a_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as file:
        pickle.dump({"visual.conv1.weight": torch.zeros(1), "payload": Exploit(marker)}, file)
    with pytest.raises(ValueError, match="refusing to load .*evil.bin: it holds Python objects"):
        VideoEncoder.create(EncoderConfig(model="centerclip-test", pretrained=str(path)))
    assert not marker.exists()
    torch.save({"weights": torch.zeros(1), "payload": Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        checkpoint.load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unknown_model_and_tag_errors():
    with pytest.raises(ValueError, match="unknown model 'ViT-Z-99'"):
        VideoEncoder.create(EncoderConfig(model="ViT-Z-99"))
    with pytest.raises(ValueError, match="neither a weights file nor a pretrained tag of ViT-B-32; tags: .*openai"):
        VideoEncoder.create(EncoderConfig(model="ViT-B-32", pretrained="not-a-tag"))


def test_offline_pretrained_tag_fails_fast_saying_where_to_put_the_weights(monkeypatch):
    monkeypatch.setattr(checkpoint, "_hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"no network.*--pretrained /path/to/open_clip_pytorch_model.bin"):
        VideoEncoder.create(EncoderConfig(model="ViT-B-32", pretrained="openai"))
    assert time.monotonic() - start < 10


def test_files_that_are_not_weights_get_a_message_naming_the_file_and_the_problem(tmp_path):
    """Never torch's hint to retry with weights_only=False, never a raw EOFError or SafetensorError."""
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "fake.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "folder").mkdir()
    expected = {"empty.pt": "is empty", "random.pt": "not a PyTorch checkpoint: it is damaged or in another format",
                "fake.safetensors": "not a valid safetensors file", "folder": "folder without model.safetensors"}
    for name, message in expected.items():
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            VideoEncoder.create(EncoderConfig(pretrained=str(tmp_path / name)))
        assert message in str(error.value) and name in str(error.value)
        assert "weights_only" not in str(error.value) and "Python objects" not in str(error.value)


def test_weights_of_another_model_are_refused_with_the_model_named(tmp_path):
    torch.save(VideoEncoder.create(EncoderConfig(model="centerclip-test")).clip.state_dict(), tmp_path / "test.pt")
    with pytest.raises(ValueError, match=r"test.pt does not hold centerclip-tiny weights .*pass the --model"):
        VideoEncoder.create(EncoderConfig(pretrained=str(tmp_path / "test.pt")))
