"""Ray Tune sweeps on a real local Ray: report files, resume after an interruption, bad configs
refused before any trial, and metrics identical to pipelines/evaluate.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch
import yaml
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.sample import Categorical

from centerclip.model.checkpoint import save_checkpoint
from centerclip.train.loop import TrainConfig
from centerclip.train import benchmark
from sweeps import report, sweep

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory):
    """The test model's random weights in a checkpoint, so that every trial and evaluate.py load
    the very same model from a file."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    save_checkpoint(folder, open_clip.create_model("centerclip-test"), {"model": "centerclip-test", "schedule": "none", "frames": 4})
    return folder


def write_config(folder: Path, **values) -> Path:
    path = folder / f"{values['name']}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def tiny_config(folder: Path, root: Path, weights: Path, name: str, space: list, **values) -> Path:
    return write_config(folder, name=name, root=str(root), pretrained=str(weights), frames=4, batch_size=4,
                        storage=str(folder / "runs"), cache=str(folder / "cache"), space=space, **values)


@pytest.fixture(scope="module")
def tiny_sweep(ray_session, synthetic_small, test_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    config = tiny_config(folder, synthetic_small, test_weights, "tiny", cpus_per_trial=1,
                         space=["none", {"algorithm": ["kmedoids", "sparse"], "block": 2, "segments": 2, "tokens": 16}])
    return folder, sweep.main([str(config)])


def test_tiny_sweep_reports_every_trial_with_csv_png_and_tensorboard(tiny_sweep):
    folder, rows = tiny_sweep
    assert [row["schedule"] for row in rows] == ["none", "kmedoids@2:2x16", "sparse@2:2x16"]
    assert {row["status"] for row in rows} == {"TERMINATED"}
    for row in rows:
        for direction in ("text_to_video", "video_to_text"):
            for name in ("R@1", "R@5", "R@10", "MdR", "MnR"):
                key = f"{direction}/{name}"
                assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], key
        assert row["gflops_per_video"] > 0 and row["ms_per_video"] > 0 and row["peak_memory_mb"] > 0
    assert rows[0]["gflops_per_video"] > rows[1]["gflops_per_video"] == rows[2]["gflops_per_video"]

    experiment = folder / "runs" / "tiny"
    lines = (experiment / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("schedule,status,gflops_per_video") and len(lines) == 4
    assert (experiment / "pareto.png").read_bytes().startswith(b"\x89PNG")
    trials = [path for path in experiment.iterdir() if path.is_dir()]
    assert len(trials) == 3 and all(any(trial.glob("events.out.tfevents.*")) for trial in trials)


def test_sweep_metrics_equal_the_evaluate_pipeline(tiny_sweep, synthetic_small, test_weights):
    folder, rows = tiny_sweep
    job = benchmark.EvaluateJob(root=str(synthetic_small), pretrained=str(test_weights), frames=4, batch_size=4,
                                        schedules=("kmedoids@2:2x16",), cache=str(folder / "cache"))
    [expected] = benchmark.run(job)
    row = next(row for row in rows if row["schedule"] == "kmedoids@2:2x16")
    for subset, prefix in (("all", ""), ("temporal", "temporal/")):
        for direction, values in expected[subset].items():
            assert {name: row[f"{prefix}{direction}/{name}"] for name in values} == values
    assert row["gflops_per_video"] == expected["gflops_per_video"]


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_session, synthetic_small, test_weights, tmp_path):
    space = ["none", "kmedoids@1:2x16", "kmedoids@2:2x16", "sparse@2:2x16"]
    # One trial at a time, so that the interruption finds trials finished, running and pending.
    config = tiny_config(tmp_path, synthetic_small, test_weights, "resumed", space, cpus_per_trial=2)
    experiment = tmp_path / "runs" / "resumed"
    # The first run is a separate driver on this session's Ray, interrupted by Ctrl-C (SIGINT)
    # once a trial has finished: Tune then saves the experiment's state and stops.
    driver = subprocess.Popen([sys.executable, "sweeps/sweep.py", str(config)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address})
    deadline = time.monotonic() + 120
    while not any(path.stat().st_size for path in experiment.glob("*/result.json")):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0][-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 0, output[-3000:]
    assert "run the same command again to resume" in output
    # A result holds its trial's pid, timestamp and timings: a trial run again would change it.
    # Finished: the trials Tune had recorded as terminated when it stopped. A trial can have written
    # its result and not yet ended (it was RUNNING in the saved state); Tune rightly runs it again.
    terminated = {Path(trial.path) for trial in ExperimentAnalysis(str(experiment)).trials if trial.status == "TERMINATED"}
    finished = {path: path.read_text() for path in experiment.glob("*/result.json") if path.parent in terminated}
    assert 1 <= len(finished) < len(space)

    rows = sweep.main([str(config)])
    assert sorted(row["schedule"] for row in rows) == sorted(space)
    assert {row["status"] for row in rows} == {"TERMINATED"}
    assert {path: path.read_text() for path in finished} == finished
    results = {path.parent: path.read_text().splitlines() for path in experiment.glob("*/result.json")}
    assert len(results) == len(space) and all(results.values())
    # Each finished trial ran once; one that was still running when the sweep stopped ran again.
    assert all(len(lines) == 1 for trial, lines in results.items() if trial in terminated), results


def test_resuming_with_a_changed_config_is_refused(tiny_sweep):
    folder, _ = tiny_sweep
    config = folder / "tiny.yaml"
    changed = {**yaml.safe_load(config.read_text()), "space": ["none"]}
    config.write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match="another config .*schedules"):
        sweep.main([str(config)])


def test_fine_tuning_sweeps_use_random_search_and_asha(ray_session, synthetic_small, test_weights, tmp_path):
    finetune = {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1}
    config = tiny_config(tmp_path, synthetic_small, test_weights, "tuned", ["none", "kmedoids@2:2x16"],
                         finetune=finetune, samples=2, cpus_per_trial=1)
    param_space, tune_config = sweep.search(sweep.SweepConfig.load(config))
    assert isinstance(tune_config.scheduler, ASHAScheduler) and tune_config.num_samples == 2
    assert isinstance(param_space["schedule"], Categorical)
    rows = sweep.main([str(config)])
    assert len(rows) == 2 and {row["status"] for row in rows} == {"TERMINATED"}
    assert all(row["step"] in (1, 2) and row["loss"] > 0 and "text_to_video/R@1" in row for row in rows)
    assert sweep.SweepConfig.load(config).finetune == TrainConfig(**finetune)


@pytest.mark.parametrize("change, message", [
    ({"space": ["kmeans@2:2x16"]}, "space entry 1 .*unknown algorithm 'kmeans'"),
    ({"space": [{"algorithm": "kmedoids", "block": 2, "segments": 3, "tokens": 16}]}, "kmedoids@2:3x16 .*do not divide"),
    ({"space": ["none", "kmedoids@4:2x16"]}, "kmedoids@4:2x16 .*out of range"),
    ({"space": ["pooling@2:2x8"]}, "pooling@2:2x8 .*exactly 16"),
    ({"space": [{"algorithm": "kmedoids", "block": 2}]}, "a stage needs all of block, segments, tokens"),
    ({"root": "/nonexistent/msrvtt"}, "data root /nonexistent/msrvtt does not exist"),
    ({"dataset": "msrvtt", "root": None}, "`root` is required for msrvtt"),
    ({"segments": 4}, r"unknown key\(s\) \['segments'\]"),
    ({"video_to_text": "per-video"}, "video_to_text must be one of best-caption, every-caption"),
])
def test_a_bad_config_fails_before_any_trial_naming_the_problem(synthetic_small, tmp_path, change, message):
    values = {"name": "bad", "root": str(synthetic_small), "model": "centerclip-test", "frames": 4,
              "storage": str(tmp_path / "runs"), "cache": str(tmp_path / "cache"), "space": ["none"], **change}
    config = write_config(tmp_path, **values)
    with pytest.raises(ValueError, match=message):
        sweep.main([str(config)])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()  # nothing decoded, no trial


def test_pareto_front_keeps_what_nothing_cheaper_beats():
    points = [(1.0, 20.0), (0.5, 22.0), (0.5, 10.0), (0.8, 21.0), (0.2, 15.0), (0.9, 25.0)]
    assert report.pareto_front(points) == [4, 1, 5]


def test_labels_keep_their_order_never_overlap_and_stay_at_their_points_when_there_is_room():
    targets = [0.5, 0.2, 0.51, 0.52, 0.9, 0.2, 0.995]
    positions = report.label_positions(targets, gap=0.05)
    order = sorted(range(len(targets)), key=lambda i: targets[i])
    placed = [positions[i] for i in order]
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(placed, placed[1:]))
    assert 0 <= min(positions) and max(positions) <= 1
    assert positions[4] == 0.9  # nothing near it
    crowded = report.label_positions([0.5] * 30, gap=0.05)  # cannot fit: spread evenly over the column
    assert sorted(crowded) == pytest.approx([i / 29 for i in range(30)])


def test_the_pareto_plot_says_what_was_swept_on_what(tmp_path):
    config = sweep.SweepConfig(schedules=("none", "kmedoids@3:4x49"), name="default")
    rows = [{"schedule": "none", "videos": 2500}, {"schedule": "kmedoids@3:4x49", "videos": 2500}]
    title = sweep.title(config, rows)
    assert "2 token-reduction schedules" in title and "built-in centerclip-tiny" in title
    assert "synthetic test, 2500 videos" in title and "R@1" in title and "GFLOPs" in title


def test_the_default_sweep_fits_the_built_in_model():
    default = sweep.SweepConfig.load(REPO / "sweeps" / "default.yaml")
    algorithms = {text.split("(")[0].split("@")[0] for text in default.schedules}
    assert algorithms == {"none", "kmedoids", "spectral", "pooling", "sparse"}
    assert any("sampling=random" in text for text in default.schedules)
    assert {"spectral@3:4x49", "spectral(graph=knn)@3:4x49", "spectral(normalize=true,self_loops=false)@3:4x49"} <= set(default.schedules)
    assert len(set(default.schedules)) == len(default.schedules), "a schedule swept twice"
    assert default.synthetic_videos == 12500 and default.video_to_text == "best-caption" and default.bootstrap > 0
    from centerclip import EncoderConfig, VideoEncoder

    sweep.check_schedules(default, VideoEncoder.create(EncoderConfig(frames=default.frames)))
    param_space, tune_config = sweep.search(default)
    assert param_space == {"schedule": {"grid_search": list(default.schedules)}} and tune_config.scheduler is None
