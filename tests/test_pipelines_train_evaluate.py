import json

import numpy as np
import pytest
import torch

from centerclip import EncoderConfig, Schedule, VideoEncoder
from centerclip.train.evaluation import embed_videos
from centerclip.media.frames import FrameSet
from centerclip.train.loop import train
from centerclip.commands import evaluate as evaluate_command
from centerclip.commands import train as train_command
from centerclip.train import benchmark, trainer


def test_ray_train_on_two_workers_sees_all_negatives(ray_session, synthetic_small, tmp_path):
    """Two DDP workers with half the batch each give the loss of one process seeing the whole
    batch: the contrastive loss all-gathers embeddings (with their gradients) across workers."""
    argv = ["--root", str(synthetic_small), "--model", "centerclip-test", "--frames", "4", "--workers", "2",
            "--steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--log-every", "1",
            "--storage", str(tmp_path / "runs"), "--name", "two", "--cache", str(tmp_path / "cache")]
    summary = train_command.main(argv)
    assert summary["metrics"]["step"] == 3
    checkpoint = summary["checkpoint"]
    assert (tmp_path / "runs" / "two").is_dir() and checkpoint

    job = train_command.parse_args(argv)
    data = FrameSet.load(trainer.prepare_frames(job, trainer.encoder(job)))
    torch.manual_seed(job.train.seed)
    single = VideoEncoder.create(EncoderConfig(model="centerclip-test", frames=4))
    metrics = train(single, data, job.train)
    assert summary["metrics"]["loss"] == pytest.approx(metrics["loss"], abs=1e-4)

    restored = VideoEncoder.create(EncoderConfig(pretrained=checkpoint))
    assert torch.allclose(restored.clip.visual.conv1.weight, single.clip.visual.conv1.weight, atol=1e-5)


def test_evaluate_pipeline_reports_schedules_and_temporal_subset(ray_session, synthetic_small, tmp_path):
    argv = ["--root", str(synthetic_small), "--model", "centerclip-test", "--frames", "4",
            "--schedule", "none", "--schedule", "kmedoids@2:2x16", "--dsl", "--cache", str(tmp_path / "cache"),
            "--json", str(tmp_path / "results.json")]
    results = evaluate_command.main(argv)
    assert [r["schedule"] for r in results] == ["none", "kmedoids@2:2x16"]
    assert results[0]["gflops_per_video"] > results[1]["gflops_per_video"]
    for result in results:
        assert set(result["all"]) == {"text_to_video", "video_to_text", "text_to_video_dsl", "video_to_text_dsl"}
        assert "temporal" in result and 0 <= result["all"]["text_to_video"]["R@1"] <= 100
    assert json.loads((tmp_path / "results.json").read_text()) == results

    assert len(evaluate_command.main(argv[:-2] + ["--ray"])) == 2


def test_ray_data_encodes_the_same_embeddings(ray_session, synthetic_small, tmp_path):
    job = benchmark.EvaluateJob(root=str(synthetic_small), model="centerclip-test", frames=4,
                                        cache=str(tmp_path / "cache"))
    # No reduction: with random weights on these flat 32 px frames many tokens are near-identical,
    # and a medoid can flip on last-bit differences between thread counts (the actor has one thread).
    encoder = VideoEncoder.create(EncoderConfig(model="centerclip-test", frames=4, schedule=Schedule()))
    data, folder = benchmark.load_split(job, encoder)
    direct = embed_videos(encoder, data, np.arange(len(data)), batch_size=2)
    distributed = benchmark.embed_with_ray(encoder, folder, len(data), batch_size=2)
    assert torch.allclose(direct, distributed, atol=1e-5)


def test_evaluate_rejects_a_bad_schedule_before_decoding(tmp_path):
    with pytest.raises(ValueError, match="do not divide"):
        evaluate_command.main(["--model", "centerclip-test", "--frames", "4", "--schedule", "kmedoids@2:3x16",
                                "--root", str(tmp_path), "--cache", str(tmp_path / "cache")])


def test_train_flags_switch_and_default_to_the_model(tmp_path):
    job = train_command.parse_args(["--grad-checkpointing"])
    assert job.train.grad_checkpointing is True and job.frames is None
    assert train_command.parse_args(["--no-grad-checkpointing"]).train.grad_checkpointing is False
    assert trainer.encoder(job).frames == 8  # the built-in model's, from its metadata
    with pytest.raises(SystemExit):
        train_command.parse_args(["--grad-checkpointing", "on"])  # a switch takes no value
