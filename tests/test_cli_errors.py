"""The usual mistakes, tried on every command line: each ends with one line on stderr that names the
input and what to do, exit status 2, no traceback, and nothing created. --help answers without
loading torch, Ray or LanceDB."""

from __future__ import annotations

import datetime
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from centerclip import cli
from centerclip.commands import evaluate, index, search, train
from sweeps import report, sweep

REPO = Path(__file__).resolve().parents[1]
CLIS = {"pipelines/index.py": index, "pipelines/search.py": search, "pipelines/evaluate.py": evaluate,
        "pipelines/train.py": train, "sweeps/sweep.py": sweep, "sweeps/report.py": report}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding the bad inputs, as the current directory (so defaults would land here)."""
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "fake.safetensors").write_bytes(b"not a safetensors file at all")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "pickled.pt").write_bytes(pickle.dumps({"when": datetime.datetime(2026, 1, 1)}))  # no tensors: code
    from safetensors.numpy import save_file

    save_file({"other.weight": np.zeros((3, 3), np.float32)}, str(tmp_path / "other.safetensors"))
    whole = (REPO / "centerclip" / "model" / "weights" / "centerclip-tiny" / "model.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(whole[:len(whole) // 3])  # a valid header, a third of the data
    (tmp_path / "broken.yaml").write_text("space: [none\nname: x")
    (tmp_path / "unknown.yaml").write_text("space: [foo@6:4x49]\nstorage: runs\n")
    (tmp_path / "nothing").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


BAD_SCHEDULES = [(["--schedule", "foo@6:4x49"], "unknown algorithm 'foo'"),
                 (["--schedule", "kmedoids@99:4x49"], "block 99 is out of range: must be in [1, 5]")]
BAD_WEIGHTS = [(["--pretrained", "empty.pt"], "empty.pt is empty"),
               (["--pretrained", "random.pt"], "random.pt is not a PyTorch checkpoint"),
               (["--pretrained", "checkpoint"], "checkpoint is a folder without model.safetensors"),
               (["--pretrained", "fake.safetensors"], "fake.safetensors is not a valid safetensors file"),
               (["--pretrained", "runs/none/checkpoint_1"], "runs/none/checkpoint_1: no such file or folder")]
# Only loading tells these from good weights: the index checks them so before Ray starts.
UNLOADABLE_WEIGHTS = [(["--pretrained", "pickled.pt"], "refusing to load pickled.pt: it holds Python objects"),
                      (["--pretrained", "truncated.safetensors"], "truncated.safetensors is not a valid safetensors file"),
                      (["--pretrained", "other.safetensors"], "other.safetensors does not hold centerclip-tiny weights")]
MISTAKES = [
    *[(index, argv, message) for argv, message in BAD_SCHEDULES + BAD_WEIGHTS + UNLOADABLE_WEIGHTS],
    (index, ["/no/such/videos"], "input /no/such/videos does not exist"),
    (index, ["--moments-aft", "3"], "unrecognized arguments: --moments-aft"),  # never read as --moments-after
    (index, ["/no/such/**/*.mp4"], "input /no/such/**/*.mp4 does not exist"),
    (index, ["--frames", "0"], "argument --frames: must be above 0"),
    (index, ["--model", "ViT-Z-99"], "unknown model 'ViT-Z-99'"),
    (index, ["--decode", "snap=scene"], "snap must be one of none, reference, keyframe, got 'scene'"),
    (index, ["--decode", "threads=1,speed=2"], "unknown decode option 'speed'"),
    (evaluate, ["--decode", "max_shift=3"], "max_shift must be between 0 and 1"),
    (search, ["a dog"], "no database at centerclip.lancedb: index videos into it first"),
    (search, ["a dog", "--db", "elsewhere.lancedb"], "no database at elsewhere.lancedb"),
    (search, ["--video", "clip.mp4"], "--video clip.mp4: no such file"),
    (search, ["a dog", "--where", "kind"], "expected COLUMN=VALUE"),
    (search, ["a dog", "--k", "0"], "argument --k: must be above 0"),
    (search, [], "give either a text query or --video PATH"),
    *[(evaluate, argv, message) for argv, message in BAD_SCHEDULES + BAD_WEIGHTS[1:2]],
    (evaluate, ["--dataset", "msrvtt"], "--dataset msrvtt needs --root"),
    (evaluate, ["--dataset", "msrvtt", "--root", "/no/such/msrvtt"], "--root /no/such/msrvtt: no such folder"),
    *[(train, argv, message) for argv, message in BAD_SCHEDULES + BAD_WEIGHTS[3:4]],
    (train, ["--grad-checkpointing", "on"], "unrecognized arguments: on"),
    (train, ["--steps", "0"], "steps must be >= 1"),
    (sweep, ["missing.yaml"], "missing.yaml: no such file"),
    (sweep, ["broken.yaml"], "broken.yaml is not valid YAML"),
    (sweep, ["unknown.yaml"], "unknown algorithm 'foo'"),
    (report, ["runs/sweeps/none"], "runs/sweeps/none: no such folder"),
    (report, ["nothing"], "nothing holds no Tune experiment"),
]


@pytest.mark.parametrize("module, argv, message", MISTAKES,
                         ids=[f"{module.__name__.rsplit('.', 1)[-1]} {' '.join(argv)}" for module, argv, message in MISTAKES])
def test_a_usual_mistake_ends_in_one_line_naming_it(module, argv, message, workdir, capsys):
    before = sorted(path.name for path in workdir.iterdir())
    with pytest.raises(SystemExit) as ended:
        cli.run(module.main, argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0] and message in lines[0], err
    assert sorted(path.name for path in workdir.iterdir()) == before, "a failed command left files behind"


def test_the_traceback_is_one_flag_or_variable_away(tmp_path):
    command = [sys.executable, str(REPO / "pipelines" / "evaluate.py"), "--schedule", "kmedoids@99:4x49"]
    plain = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        "evaluate.py: error: stage 99:4x49: block 99 is out of range: must be in [1, 5] for a transformer of 6 blocks"]
    debug = subprocess.run(command + ["--debug"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ValueError" in debug.stderr
    variable = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, cli.DEBUG_ENV: "1"})
    assert variable.returncode != 0 and "Traceback" in variable.stderr


def test_help_is_instant_without_torch_ray_or_lancedb():
    """--help of every CLI, in one fresh interpreter that must not have loaded the heavy libraries."""
    code = "\n".join([
        "import runpy, sys",
        f"for path in {[str(REPO / path) for path in CLIS]!r}:",
        "    sys.argv = [path, '--help']",
        "    try:",
        "        runpy.run_path(path, run_name='__main__')",
        "    except SystemExit as done:",
        "        assert done.code == 0, (path, done.code)",
        "sys.argv = ['centerclip', '--help']",
        "try:",
        "    runpy.run_module('centerclip', run_name='__main__', alter_sys=True)",
        "except SystemExit as done:",
        "    assert done.code == 0, done.code",
        "print(sorted(name for name in ('torch', 'ray', 'lancedb', 'open_clip') if name in sys.modules))",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage: ") == len(CLIS) + 1  # and python -m centerclip
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_ordinals_read_as_words():
    from centerclip.index.progress import ordinal

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]
