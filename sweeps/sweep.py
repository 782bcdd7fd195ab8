"""Ray Tune sweep of token-clustering schedules: retrieval accuracy against cost.

    python sweeps/sweep.py sweeps/default.yaml       # built-in model, synthetic test split
    ray job submit --working-dir . -- python sweeps/sweep.py sweeps/default.yaml

A sweep is a YAML file (sweeps/default.yaml is a commented example): the benchmark and split, the
model, a search space of schedules, optional fine-tuning steps per trial and each trial's
resources. Every schedule is checked against the model and the frame count before anything is
decoded or any trial starts. The split is decoded once into the frame cache, which every trial
memory-maps. Each trial reports both directions' R@1/5/10, MdR and MnR with their 95% bootstrap
intervals over queries, GFLOPs per video, measured ms per video and peak memory; Tune logs them
per trial for TensorBoard.

Everything goes to STORAGE/NAME: the experiment state, one folder per trial, and the report
(trials.csv and pareto.png). Running the same command again resumes an interrupted sweep without
re-running the trials that finished, then writes the report again.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: sys.path[0] is sweeps/, the repository root holds centerclip/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Light imports only (--help answers at once): torch, Ray and Tune load inside the functions that use them.
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from centerclip import Schedule, cli, datasets  # noqa: E402
from centerclip.train.config import TrainConfig  # noqa: E402
from centerclip.datasets.msrvtt import EVALUATION_VIDEOS  # noqa: E402
from centerclip.train.benchmark import EvaluateJob, load_split  # noqa: E402
from sweeps import report  # noqa: E402

if TYPE_CHECKING:
    import torch
    from ray import tune

    from centerclip import EncoderConfig, VideoEncoder
    from centerclip.media.frames import FrameSet

if __name__ != "__main__":
    import ray.cloudpickle

    # Trials run in Ray workers that may not have the repository on their path (a local Ray, a
    # cluster reached without --working-dir): the trainable's code travels with it instead.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

METRIC = "text_to_video/R@1"  # what "best" means, and what early stopping compares
STAGE_KEYS = ("block", "segments", "tokens")
CONFIG_FILE = "sweep.json"  # the sweep an experiment folder was started with, to refuse resuming a different one


@dataclass(frozen=True)
class SweepConfig:
    schedules: tuple[str, ...]  # every schedule of the search space, expanded from the YAML's `space`
    name: str = "sweep"
    dataset: str = "synthetic"
    root: str | None = None  # the benchmark's annotation folder; synthetic: generated under `cache` if omitted
    split: str = "test"
    synthetic_videos: int = EVALUATION_VIDEOS
    model: str | None = None  # default: the built-in model
    pretrained: str | None = None
    frames: int | None = None  # default: the model's
    batch_size: int = 32
    dsl: bool = False
    video_to_text: str = "best-caption"  # multi-caption protocol (centerclip.train.metrics): or every-caption
    bootstrap: int = 1000  # resamples for every metric's 95% interval; 0: none
    finetune: TrainConfig | None = None  # fine-tuning per trial, on `train_split`, evaluated every log_every steps
    train_split: str = "train"
    samples: int | None = None  # random-search draws when fine-tuning (default: one per schedule)
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share a GPU between trials
    max_failures: int = 1  # retries of a failed trial
    storage: str = "runs/sweeps"  # a folder or s3://bucket/prefix
    cache: str = ".cache/centerclip"  # generated data and decoded frames

    def __post_init__(self) -> None:
        if not self.schedules:
            raise ValueError("sweep config: `space` is empty: list at least one schedule, e.g. none")
        if self.dataset not in datasets.LOADERS:
            raise ValueError(f"sweep config: unknown dataset {self.dataset!r}; choose from {', '.join(datasets.LOADERS)}")
        if self.dataset != "synthetic" and self.root is None:
            raise ValueError(f"sweep config: `root` is required for {self.dataset}: the folder holding its annotation files")
        if self.root is not None and not Path(self.root).is_dir():
            raise ValueError(f"sweep config: data root {self.root} does not exist or is not a folder")
        if self.samples is not None and (self.finetune is None or self.samples < 1):
            raise ValueError("sweep config: `samples` (random-search draws, >= 1) needs `finetune`; without "
                             "fine-tuning every schedule is evaluated once (grid search)")
        from centerclip.train.metrics import VIDEO_TO_TEXT

        if self.video_to_text not in VIDEO_TO_TEXT or self.bootstrap < 0:
            raise ValueError(f"sweep config: video_to_text must be one of {', '.join(VIDEO_TO_TEXT)} and bootstrap >= 0")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("sweep config: cpus_per_trial must be > 0 and gpus_per_trial >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SweepConfig:
        values = dict(values)
        space = values.pop("space", None)
        if not isinstance(space, list):
            raise ValueError("sweep config: `space` must be a list of schedules (strings like kmedoids@3:4x49, "
                             "or mappings of schedule fields to a value or a list of values)")
        fields = {field.name for field in dataclasses.fields(cls)} - {"schedules"}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"sweep config: unknown key(s) {sorted(unknown)}; valid keys: space, {', '.join(sorted(fields))}")
        if values.get("finetune") is not None:
            try:
                values["finetune"] = TrainConfig(**values["finetune"])
            except TypeError as error:
                raise ValueError(f"sweep config: finetune: {error}") from None
        schedules = [schedule for index, entry in enumerate(space) for schedule in expand(entry, index)]
        return cls(schedules=tuple(dict.fromkeys(schedules)), **values)

    @classmethod
    def load(cls, path: str | Path) -> SweepConfig:
        try:
            values = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a sweep config is a YAML mapping")
        return cls.from_dict(values)

    def encoder_config(self, schedule: Schedule | None = None) -> EncoderConfig:
        from centerclip import EncoderConfig

        return EncoderConfig(model=self.model, pretrained=self.pretrained, schedule=schedule, frames=self.frames)

    def evaluate_job(self) -> EvaluateJob:
        """The evaluation pipeline's job for the same split: both decode and score it identically."""
        return EvaluateJob(dataset=self.dataset, root=self.root, split=self.split, synthetic_videos=self.synthetic_videos,
                           model=self.model, pretrained=self.pretrained, frames=self.frames, dsl=self.dsl,
                           video_to_text=self.video_to_text, bootstrap=self.bootstrap, batch_size=self.batch_size,
                           cache=self.cache)

    @property
    def experiment(self) -> str:
        storage = self.storage if "://" in self.storage else str(Path(self.storage).resolve())
        return f"{storage.rstrip('/')}/{self.name}"


def expand(entry: str | dict, index: int) -> list[str]:
    """One `space` entry -> schedule strings: a string is one schedule; a mapping of schedule fields
    (algorithm, options, and block/segments/tokens for a single stage) to values or lists of
    values is the product of its lists."""
    try:
        if isinstance(entry, str):
            return [str(Schedule.parse(entry))]
        if not isinstance(entry, dict):
            raise ValueError("expected a schedule string or a mapping")
        if "stages" in entry:
            raise ValueError("a mapping describes one stage (block, segments, tokens): write multi-stage "
                             "schedules as strings, e.g. kmedoids@2:4x98,4:2x49")
        grid = {key: value if isinstance(value, list) else [value] for key, value in entry.items()}
        schedules = []
        for values in itertools.product(*grid.values()):
            fields = dict(zip(grid, values))
            stage = {key: fields.pop(key) for key in STAGE_KEYS if key in fields}
            if stage and len(stage) < len(STAGE_KEYS):
                raise ValueError(f"a stage needs all of {', '.join(STAGE_KEYS)}, got {', '.join(stage)}")
            schedules.append(str(Schedule.from_dict({**fields, "stages": [stage] if stage else ()})))
        return schedules
    except ValueError as error:
        raise ValueError(f"sweep config: space entry {index + 1} ({entry!r}): {error}") from None


def check_schedules(sweep: SweepConfig, encoder: VideoEncoder) -> None:
    """Every trial's schedule must fit the model and the frame count: fail before decoding or any trial."""
    from centerclip.model.flops import VisionShape

    shape = VisionShape.of_model(encoder.clip)
    for text in sweep.schedules:
        try:
            Schedule.parse(text).validate(layers=shape.layers, frames=encoder.frames, tokens_per_frame=shape.tokens_per_frame)
        except ValueError as error:
            raise ValueError(f"sweep config: schedule {text} does not fit {encoder.model_name} ({shape.layers} blocks, "
                             f"{shape.tokens_per_frame} tokens per frame) at {encoder.frames} frames: {error}") from None


def peak_memory_mb(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # This trial's own process (Tune starts one per trial): ru_maxrss is KiB on Linux, bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def measure(encoder: VideoEncoder, data: FrameSet, sweep: SweepConfig) -> dict[str, float]:
    """The trial's result: retrieval metrics exactly as pipelines/evaluate.py computes them, plus cost."""
    import torch

    from centerclip.train.evaluation import embed_videos, evaluate
    from centerclip.model.flops import VisionShape, video_cost

    encoder.eval()
    device = encoder.clip.logit_scale.device
    everything = np.arange(len(data))
    # Untimed first batch: one-time allocations and kernel selection are not the schedule's cost.
    embed_videos(encoder, data, everything[:sweep.batch_size], sweep.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    videos = embed_videos(encoder, data, everything, sweep.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    metrics = {
        "gflops_per_video": video_cost(VisionShape.of_model(encoder.clip), encoder.schedule, encoder.frames).gflops,
        "ms_per_video": seconds * 1000 / len(data),
        "peak_memory_mb": peak_memory_mb(device),
        "videos": len(data),
    }
    scored = evaluate(encoder, data, dsl=sweep.dsl, videos=videos, batch_size=sweep.batch_size,
                      video_to_text=sweep.video_to_text, bootstrap=sweep.bootstrap)
    for subset, directions in scored.items():
        prefix = "" if subset == "all" else f"{subset}/"
        for direction, values in directions.items():
            metrics.update({f"{prefix}{direction}/{name}": value for name, value in values.items()})
    return metrics


def run_trial(config: dict, *, sweep: SweepConfig, frames_folder: str, train_folder: str | None) -> None:
    """One Tune trial: build the encoder with this trial's schedule, optionally fine-tune it, and
    report the measurements (after every log_every fine-tuning steps, so ASHA can stop it early)."""
    import torch
    from ray import tune

    from centerclip import VideoEncoder
    from centerclip.media.frames import FrameSet
    from centerclip.train.loop import train

    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    torch.manual_seed(sweep.seed)  # a model without a weights file gets the same random weights in every trial
    encoder = VideoEncoder.create(sweep.encoder_config(Schedule.parse(config["schedule"])))
    encoder.to("cuda" if torch.cuda.is_available() else "cpu")  # Ray shows a trial only the GPUs it was given
    data = FrameSet.load(frames_folder)
    if sweep.finetune is None:
        tune.report(measure(encoder, data, sweep))
        return

    def evaluate_and_report(progress: dict, _checkpoint: Path | None) -> None:
        tune.report({**measure(encoder, data, sweep), "step": progress["step"], "loss": progress["loss"]})
        encoder.train()  # measure() switched to evaluation mode; training goes on

    train(encoder, FrameSet.load(train_folder), sweep.finetune, pretrained=encoder.pretrained is not None,
          report=evaluate_and_report)


def search(sweep: SweepConfig) -> tuple[dict, tune.TuneConfig]:
    """Grid search over the schedules; with fine-tuning, random draws of them and ASHA, which stops
    the trials whose R@1 trails at an evaluation."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if sweep.finetune is None:
        return {"schedule": tune.grid_search(list(sweep.schedules))}, tune.TuneConfig(metric=METRIC, mode="max")
    evaluations = math.ceil(sweep.finetune.steps / sweep.finetune.log_every)
    return {"schedule": tune.choice(list(sweep.schedules))}, tune.TuneConfig(
        metric=METRIC, mode="max", num_samples=sweep.samples or len(sweep.schedules),
        search_alg=BasicVariantGenerator(random_state=sweep.seed),
        scheduler=ASHAScheduler(max_t=evaluations, grace_period=1),
    )


def run(sweep: SweepConfig) -> tune.ResultGrid:
    """Check every schedule, decode the split(s) once, then run the trials or resume them."""
    from ray import tune

    from centerclip import VideoEncoder

    encoder = VideoEncoder.create(sweep.encoder_config())
    check_schedules(sweep, encoder)
    job = sweep.evaluate_job()
    _, frames_folder = load_split(job, encoder)
    train_folder = None
    if sweep.finetune is not None:
        train_folder = str(load_split(replace(job, split=sweep.train_split), encoder)[1].resolve())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep=sweep, frames_folder=str(frames_folder.resolve()), train_folder=train_folder),
        {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial},
    )
    if tune.Tuner.can_restore(sweep.experiment):
        started = read_started(sweep)
        if started != as_json(sweep):
            changed = sorted(key for key in {**started, **as_json(sweep)} if started.get(key) != as_json(sweep).get(key))
            raise ValueError(f"{sweep.experiment} holds a sweep started from another config (differing in: "
                             f"{', '.join(changed)}); give this one another name, or remove that folder")
        # Finished trials stay as they are; interrupted ones run again, as do failed ones.
        tuner = tune.Tuner.restore(sweep.experiment, trainable, resume_unfinished=True, restart_errored=True)
    else:
        param_space, tune_config = search(sweep)
        storage, name = sweep.experiment.rsplit("/", 1)
        failures = tune.FailureConfig(max_failures=sweep.max_failures)
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=tune.RunConfig(name=name, storage_path=storage, failure_config=failures))
        write_started(sweep)
    return tuner.fit()


def as_json(sweep: SweepConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(sweep)))


def read_started(sweep: SweepConfig) -> dict:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(sweep.experiment)
    with filesystem.open_input_stream(f"{path}/{CONFIG_FILE}") as stream:
        return json.loads(stream.read())


def write_started(sweep: SweepConfig) -> None:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(sweep.experiment)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{CONFIG_FILE}") as stream:
        stream.write(json.dumps(as_json(sweep), indent=2).encode())


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="the sweep's YAML file, e.g. sweeps/default.yaml")
    return parser


def title(sweep: SweepConfig, rows: list[dict]) -> str:
    """What was swept on what: the plot's title."""
    model = (f"{sweep.model} ({sweep.pretrained})" if sweep.model
             else f"the model of {Path(sweep.pretrained).name}" if sweep.pretrained else "built-in centerclip-tiny")
    videos = next((row["videos"] for row in rows if row.get("videos")), None)
    split = f"{sweep.dataset} {sweep.split}" + (f", {videos} videos" if videos else "")
    tuned = f", fine-tuned {sweep.finetune.steps} steps" if sweep.finetune else ""
    return (f"Sweep '{sweep.name}': {len(rows)} token-reduction schedules of {model}{tuned}\n"
            f"on {split} ({sweep.frames or 'model'} frames); text->video R@1 against vision GFLOPs per video")


def parse_args(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    config = Path(parser.parse_args(argv).config)
    if not config.is_file():
        parser.error(f"{config}: no such file (a sweep is a YAML file: sweeps/default.yaml documents every key)")
    return config


def main(argv: list[str] | None = None) -> list[dict]:
    """Run (or resume) the sweep, then write and print its report; returns one row per trial."""
    sweep = SweepConfig.load(parse_args(argv))
    rows = report.trial_rows(run(sweep).experiment_path)
    written = report.write(rows, sweep.experiment, title(sweep, rows))
    print(report.markdown_table(rows))
    print(f"video->text protocol: {sweep.video_to_text}; [low, high]: 95% bootstrap intervals over queries "
          f"({sweep.bootstrap} resamples)")
    print("\n".join(f"wrote {path}" for path in written))
    unfinished = sum(row["status"] != "TERMINATED" for row in rows)
    if unfinished:
        print(f"{unfinished} of {len(rows)} trials did not finish: run the same command again to resume them")
    return rows


if __name__ == "__main__":
    cli.run(main)
