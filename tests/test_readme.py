"""Every shell and Python example of README.md, read from the README so that they cannot drift.

Examples that can run here run for real, in README order, in one scratch folder (the Quick start
indexes the sample set there, with fewer videos; `clip.mp4` is a generated video). Examples that
need a cluster, downloaded weights, benchmark videos or an hour are parsed by the CLI they call:
every flag must be accepted. How a command is checked is decided by its first words (CHECKS): a
new example of a listed command is covered as it is, a new command needs one row.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.videos import write_video

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

RUN = "run"  # run here; parsed only when it names a path that is not in the scratch folder (/videos, s3://...)
PARSE = "parse"  # its CLI's parser must accept it
SETUP = "setup"  # installs or tests: what CI does around this suite
SUBMIT = "submit"  # `ray job submit ... -- COMMAND`: COMMAND is parsed
CLUSTER = "cluster"  # needs a cloud account or the output of a long run: only the files it names are checked
HTTP = "http"  # a request to the search service: sent for real to the app serving the scratch folder's index

CHECKS = {
    ("python3", "-m", "venv"): SETUP,
    (".",): SETUP,
    ("pip", "install"): SETUP,
    ("pytest",): SETUP,
    ("python", "pipelines/index.py"): RUN,
    ("python", "pipelines/search.py"): RUN,
    ("python", "pipelines/train.py"): PARSE,  # minutes to hours on benchmark data
    ("python", "pipelines/evaluate.py"): PARSE,  # benchmark videos and downloaded weights
    ("python", "sweeps/sweep.py"): PARSE,  # minutes
    ("python", "sweeps/report.py"): PARSE,  # needs a sweep's folder
    ("python", "pipelines/serve.py"): PARSE,  # serves until stopped: tests/test_serve.py runs it
    ("python", "benchmarks/finetune_clustering.py"): PARSE,  # an hour of training on 2 cores
    ("curl",): HTTP,
    ("ray", "job", "submit"): SUBMIT,
    ("ray",): CLUSTER,  # ray up / dashboard / get-auth-token
    ("cp",): CLUSTER,  # copies what the training command before it wrote
    ("chmod",): CLUSTER,  # the token file `ray get-auth-token` writes on the user's machine
    ("export",): CLUSTER,  # the user's own cloud credentials (tests/test_object_store.py sets moto's)
}
# Smaller runs of the same commands, where the example's size only costs time.
SMALLER = {"pipelines/index.py": ["--sample-videos", "8"]}
PATH_SUFFIXES = (".mp4", ".csv", ".parquet", ".jsonl", ".json", ".yaml", ".lancedb", ".safetensors", ".pt")


def examples(text: str) -> list[tuple[str, str | list[str]]]:
    """("python", code) for each Python block and ("bash", argv) for each command of a shell block
    (continuation lines joined, comments dropped, `a && b` split)."""
    found = []
    for language, body in re.findall(r"^```(\w+)\n(.*?)^```", text, re.M | re.S):
        if language == "python":
            found.append(("python", body))
        elif language in ("bash", "sh", "shell"):
            for line in body.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words:
                    end = words.index("&&") if "&&" in words else len(words)
                    found.append(("bash", words[:end]))
                    words = words[end + 1:]
    return found


def without_environment(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return words


def check_of(words: list[str]) -> str:
    for prefix, check in sorted(CHECKS.items(), key=lambda item: -len(item[0])):
        if tuple(words[:len(prefix)]) == prefix:
            return check
    raise AssertionError(f"README command {shlex.join(words)!r} is not classified: add its first words to "
                         f"CHECKS in tests/test_readme.py (run it, parse it, or say why neither)")


def parse(words: list[str]) -> None:
    """The CLI's own parser accepts every flag of the command."""
    script = words[1].removesuffix(".py")
    # pipelines/NAME.py runs centerclip.commands.NAME; sweeps/ are their own commands
    module = importlib.import_module(script.replace("pipelines/", "centerclip.commands.").replace("/", "."))
    try:
        module.build_parser().parse_args(words[2:])
    except SystemExit as error:
        raise AssertionError(f"{shlex.join(words)}: its parser refuses it (status {error.code})") from None


def missing_paths(words: list[str], folder: Path) -> list[str]:
    return [word for word in words[2:] if not word.startswith("-") and (
        "://" in word or word.startswith("/") or word.endswith(PATH_SUFFIXES)) and not (folder / word).exists()]


EXAMPLES = examples(README.read_text())


def test_the_readme_has_examples_of_every_kind():
    kinds = {check_of(without_environment(words)) for language, words in EXAMPLES if language == "bash"}
    assert kinds == {RUN, PARSE, SETUP, SUBMIT, CLUSTER, HTTP}
    assert sum(language == "python" for language, _ in EXAMPLES) >= 2


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, ray_session):
    """The folder the examples run in, with a generated clip.mp4; index runs join the test's Ray."""
    folder = tmp_path_factory.mktemp("readme")
    write_video(folder / "clip.mp4", frames=40, fps=10, width=64, height=48)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    return folder, env


@pytest.mark.parametrize("language, example", EXAMPLES,
                         ids=[f"{i}-{shlex.join(e)[:60] if l == 'bash' else e.strip().splitlines()[0][:60]}"
                              for i, (l, e) in enumerate(EXAMPLES)])
def test_readme_example(language, example, scratch, request):
    folder, env = scratch
    if language == "python":  # as users run them: a file with no main guard, and stdin
        script = folder / f"example_{abs(hash(example))}.py"
        script.write_text(example)
        for command, given in [([sys.executable, str(script)], None), ([sys.executable, "-"], example)]:
            done = subprocess.run(command, input=given, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (command[1], done.stderr[-3000:])
        return
    words = without_environment(example)
    check = check_of(words)
    if check == SETUP:
        assert (REPO / "pyproject.toml").is_file()
        if words[:2] == ["pip", "install"]:
            extras = re.findall(r"\[(\w+)\]", " ".join(words))
            assert all(f"\n{extra} = [" in (REPO / "pyproject.toml").read_text() for extra in extras)
    elif check == CLUSTER:
        named = [word for word in words[1:] if word.endswith((".yaml", "/"))]  # files and folders of the repository
        assert all((REPO / word).exists() for word in named), named
    elif check == SUBMIT:
        assert "--" in words, "ray job submit needs `-- COMMAND`"
        command = words[words.index("--") + 1:]
        assert check_of(command) in (RUN, PARSE)
        parse(command)
    elif check == HTTP:
        request_service(words, folder, request.getfixturevalue("service"))
    elif check == PARSE or missing_paths(words, folder):
        parse(words)
    else:
        run(words, folder, env)


def run(words: list[str], folder: Path, env: dict) -> None:
    script = words[1]
    argv = words[2:]
    if script in SMALLER and not [word for word in argv if not word.startswith("-")] and "--help" not in argv:
        argv = argv + SMALLER[script]
    done = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    if "--json" in argv and script == "pipelines/search.py":
        results = json.loads(done.stdout)
        assert results, f"{shlex.join(words)} found nothing"
        if "kind=moment" in argv:
            assert all(result["start"] is not None and result["end"] > result["start"] for result in results)


@pytest.fixture(scope="module")
def service(scratch):
    """The search app (centerclip.search.web) on a real uvicorn server on loopback, over the index the
    Quick start wrote into the scratch folder, with the built-in model's text tower."""
    import torch
    import uvicorn

    from centerclip import VideoEncoder
    from centerclip.index.store import Store
    from centerclip.search.web.app import create_app

    folder, _ = scratch
    store = Store.open(str(folder / "centerclip.lancedb"))
    encoder = VideoEncoder.create().eval()

    async def embed(query: str):
        with torch.inference_mode():
            return encoder.encode_text([query])[0].float().numpy()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, embed), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    video_id = store.videos.search().where("kind = 'video'").select(["id"]).limit(1).to_arrow().column("id")[0].as_py()
    yield port, video_id
    server.should_exit = True
    thread.join(timeout=10)


def request_service(words: list[str], folder: Path, service: tuple[int, str]) -> None:
    """Send the README's curl command (VIDEO_ID: an indexed video) to the app; it must succeed."""
    port, video_id = service
    argv = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("VIDEO_ID", video_id) for word in words]
    done = subprocess.run([argv[0], "--fail", "--silent", "--show-error", *argv[1:]], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{shlex.join(words)} failed: {done.stderr}"
