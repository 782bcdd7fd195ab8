"""The indexing encoder stage: reduced precision on CPU, float32 clustering, a light module."""

import subprocess
import sys

import numpy as np
import torch

from centerclip.index.encode_stage import EncodeClips, EncodeSettings, cpu_has_bfloat16
from centerclip.model.registry import EncoderConfig
from centerclip.model.reduce import reducer_for
from centerclip.model.schedule import Schedule


def test_reduced_precision_runs_bfloat16_where_native_and_stays_close_to_float32():
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 112, 112, 3), dtype=np.uint8)
    config = EncoderConfig(schedule=Schedule.parse("kmedoids@3:4x49")).resolved()
    reduced = EncodeClips(settings=EncodeSettings(encoder=config, threads=2))
    full = EncodeClips(settings=EncodeSettings(encoder=config, threads=2, reduced_precision=False))
    assert reduced.bfloat16 == cpu_has_bfloat16(torch) and not full.bfloat16
    fast, exact = reduced.embed(frames), full.embed(frames)
    assert fast.dtype == exact.dtype == np.float32 and fast.shape == exact.shape == (4, reduced.encoder.embed_dim)
    # The weights really are bfloat16 where the CPU has it (the vectors differ), and it is harmless.
    assert reduced.encoder.visual.conv1.weight.dtype == (torch.bfloat16 if reduced.bfloat16 else torch.float32)
    assert np.array_equal(fast, exact) != reduced.bfloat16
    cosine = (fast * exact).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.999


def test_clustering_under_autocast_keeps_float32_medoids():
    patches = torch.randn(6, 2, 49, 64)  # 6 segments of 2 frames x 49 tokens
    reduce = reducer_for(Schedule.parse("kmedoids@3:4x49"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = reduce(patches, 16)
    assert torch.equal(under_autocast, reduce(patches, 16))


def test_clustering_of_bfloat16_tokens_measures_distances_in_float32():
    # A bfloat16 model hands the reducer bfloat16 tokens: the same tokens upcast give the same medoids.
    patches = torch.randn(6, 2, 49, 64).bfloat16()
    for schedule in ("kmedoids@3:4x49", "spectral@3:4x49", "sparse@3:4x49"):
        reduce = reducer_for(Schedule.parse(schedule))
        kept = reduce(patches, 16)
        assert kept.dtype == torch.bfloat16
        assert torch.equal(kept, reduce(patches.float(), 16).bfloat16()), schedule


def test_the_encoder_stage_loads_neither_lancedb_nor_a_video_decoder():
    # An encoder actor imports this module: LanceDB, decord and PyAV would be memory it never uses.
    loaded = subprocess.run([sys.executable, "-c", "import sys, centerclip.index.encode_stage; "
                             "print(sorted({'lancedb', 'decord', 'av', 'torch'} & set(sys.modules)))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_fp32_flag_turns_reduced_precision_off(tmp_path):
    from centerclip.commands.index import parse_args

    assert parse_args(["--fp32", str(tmp_path)])[0].fp32 and not parse_args([str(tmp_path)])[0].fp32


def test_an_encoder_encodes_without_loading_triton():
    # torchvision imports torch._dynamo, which imports Triton when installed: 70 MiB an encoder never uses.
    script = ("import sys, numpy as np; from centerclip.index.encode_stage import EncodeClips, EncodeSettings; "
              "encoder = EncodeClips(settings=EncodeSettings()); "
              "vectors = encoder.embed(np.zeros((2, 8, 112, 112, 3), np.uint8)); "
              "print(vectors.shape[0], 'torch._dynamo' in sys.modules, sys.modules.get('triton', 'absent'))")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["2", "True", "None"]
