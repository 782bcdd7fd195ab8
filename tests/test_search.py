import argparse
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from centerclip import EncoderConfig, VideoEncoder, cli
from centerclip.search.searcher import Result, Searcher
from centerclip.index.keys import FILTERABLE, moment_key, video_key
from centerclip.index.store import Store
from centerclip.commands.search import main, parse_where

CAPTIONS = ["a red circle moves left", "a blue square spins", "two green triangles bounce",
            "a yellow star fades out", "a man is cooking pasta", "a dog runs on a beach"]
PIPELINE = Path(__file__).parent.parent / "pipelines" / "search.py"


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return VideoEncoder.create(EncoderConfig(model="centerclip-test")).eval()


@pytest.fixture(scope="module")
def weights(encoder, tmp_path_factory):
    """The test encoder's random weights as a file, so the CLI loads the same model (--pretrained)."""
    path = tmp_path_factory.mktemp("weights") / "centerclip-test.pt"
    torch.save(encoder.clip.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def collection(encoder, tmp_path_factory):
    """One video per caption whose vector is the caption's own text embedding, so the caption must
    find it first. Video 0 also has moments: the caption's at 4-6 s, an unrelated one at 0-2 s."""
    db = str(tmp_path_factory.mktemp("db"))
    with torch.inference_mode():
        vectors = encoder.encode_text(CAPTIONS).numpy()
    videos = [video_key(f"/videos/{i}.mp4", 100 + i, 1) for i in range(len(CAPTIONS))]
    moments = [moment_key(videos[0], 0.0, 2.0), moment_key(videos[0], 4.0, 6.0)]
    store = Store.open(db, dim=encoder.embed_dim)
    store.upsert({
        "id": videos + moments, "video_id": videos + [videos[0]] * 2,
        "kind": ["video"] * len(videos) + ["moment"] * 2,
        "uri": [f"/videos/{i}.mp4" for i in range(len(videos))] + ["/videos/0.mp4"] * 2,
        "start": [None] * len(videos) + [0.0, 4.0], "end": [None] * len(videos) + [2.0, 6.0],
        # Video 0's own row is a blend, so its best row for caption 0 is the 4-6 s moment.
        "vector": np.concatenate([0.5 * (vectors[:1] + vectors[5:6]), vectors[1:], vectors[[4, 0]]]),
        "model": ["centerclip-test"] * (len(videos) + 2), "schedule": ["none"] * (len(videos) + 2),
        "metadata": [json.dumps({"caption": caption}) for caption in CAPTIONS] + ["{}", "{}"],
    })
    return db, videos


@pytest.fixture
def searcher(collection, encoder):
    return Searcher(Store.open(collection[0]), encoder)


def test_each_caption_finds_its_video_first(searcher, collection):
    _, videos = collection
    for caption, video in zip(CAPTIONS, videos):
        results = searcher.text(caption, k=3)
        assert results[0].video_id == video, caption
        assert results[0].score == pytest.approx(1.0, abs=1e-4)
        assert len({result.video_id for result in results}) == 3


def test_a_video_reports_its_best_moment(searcher, collection):
    best = searcher.text(CAPTIONS[0], k=1)[0]
    assert (best.uri, best.start, best.end) == ("/videos/0.mp4", 4.0, 6.0)
    whole = searcher.text(CAPTIONS[1], k=1)[0]
    assert (whole.start, whole.end) == (None, None)
    assert json.loads(whole.metadata) == {"caption": CAPTIONS[1]}


def test_results_are_distinct_videos_even_when_moments_crowd_the_top(searcher):
    results = searcher.text(CAPTIONS[0], k=len(CAPTIONS))
    assert len(results) == len(CAPTIONS) == len({result.video_id for result in results})
    assert [result.score for result in results] == sorted((result.score for result in results), reverse=True)


def test_filters_are_values_not_sql(searcher, collection):
    assert searcher.text(CAPTIONS[0], where={"uri": "' OR '1'='1"}) == []
    assert searcher.text(CAPTIONS[0], where={"uri": "x' OR uri != 'x"}) == []
    only = searcher.text(CAPTIONS[0], where={"uri": ["/videos/2.mp4", "/videos/3.mp4"]})
    assert {result.uri for result in only} == {"/videos/2.mp4", "/videos/3.mp4"}
    moments = searcher.text(CAPTIONS[1], where={"kind": "moment"})
    assert [result.video_id for result in moments] == [collection[1][0]]
    with pytest.raises(ValueError, match="cannot filter"):
        searcher.text(CAPTIONS[0], where={"metadata": "x"})
    for value in (5, [5], None):
        with pytest.raises(TypeError, match=re.escape(f"filter values for 'kind' must be a string or a list of strings, got {value}")):
            searcher.text(CAPTIONS[0], where={"kind": value})


def test_queries_that_are_not_text_say_what_was_given(searcher):
    for query, given in ((None, "NoneType None"), (42, "int 42"), (["a dog"], "list ['a dog']")):
        with pytest.raises(TypeError, match=re.escape(f"a query is a string, got {given}")):
            searcher.text(query)
    for k in (0, "5", 2.5):
        with pytest.raises(ValueError, match="k .* must be a whole number of at least 1, got"):
            searcher.text(CAPTIONS[0], k=k)


def test_the_cli_offers_exactly_the_filterable_columns():
    assert [parse_where(f"{column}=a=b") for column in FILTERABLE] == [(column, "a=b") for column in FILTERABLE]
    for text in ("metadata=x", "vector=1", "uri", "=x"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"COLUMN one of {', '.join(FILTERABLE)}, got {text!r}")):
            parse_where(text)


def test_empty_queries_are_refused_and_long_ones_truncated(searcher):
    for query in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            searcher.text(query)
    assert len(searcher.text("a red circle moves left " * 209, k=2)) == 2  # 5016 characters


def test_similar_leaves_out_the_query_video(searcher, collection, encoder):
    _, videos = collection
    with torch.inference_mode():
        vector = encoder.encode_text([CAPTIONS[2]])[0].numpy()
    results = searcher.similar(vector, k=2, exclude=videos[2])
    assert len(results) == 2 and videos[2] not in {result.video_id for result in results}


def test_encoder_and_table_must_agree_on_dimensions(tmp_path, encoder):
    with pytest.raises(ValueError, match="dims"):
        Searcher(Store.open(str(tmp_path), dim=encoder.embed_dim + 1), encoder)


def test_cli_prints_json(collection, weights, capsys):
    db, videos = collection
    results = main([CAPTIONS[0], "--db", db, "--k", "2", "--json", "--model", "centerclip-test",
                    "--pretrained", weights])
    printed = json.loads(capsys.readouterr().out)
    assert all(isinstance(result, Result) for result in results)
    assert [row["video_id"] for row in printed] == [result.video_id for result in results]
    assert printed[0] == {"video_id": videos[0], "uri": "/videos/0.mp4", "score": pytest.approx(1.0, abs=1e-4),
                          "start": 4.0, "end": 6.0, "metadata": {}, "row_id": moment_key(videos[0], 4.0, 6.0)}


def test_cli_prints_a_table_and_filters(collection, weights, capsys):
    db, _ = collection
    results = main([CAPTIONS[3], "--db", db, "--model", "centerclip-test", "--pretrained", weights,
                    "--where", "uri=/videos/3.mp4", "--where", "uri=/videos/4.mp4", "--where", "kind=video"])
    out = capsys.readouterr().out
    assert {result.uri for result in results} == {"/videos/3.mp4", "/videos/4.mp4"}
    assert out.splitlines()[0].split() == ["rank", "score", "time", "range", "uri"]
    assert "whole video" in out and "/videos/3.mp4" in out.splitlines()[1]


def test_cli_says_when_a_query_is_longer_than_the_model_reads(collection, weights, capsys):
    db, _ = collection
    common = ["--db", db, "--k", "2", "--model", "centerclip-test", "--pretrained", weights]
    main([CAPTIONS[0], *common])
    assert capsys.readouterr().err == ""
    main(["a red circle moves left " * 40, *common])  # 200 tokens
    lines = capsys.readouterr().err.strip().splitlines()
    cut = re.search(r"cut to the model's context of (\d+) tokens: its last (\d+) tokens were not used", lines[0])
    assert len(lines) == 1 and cut and int(cut[2]) == 200 + 2 - int(cut[1])  # start and end of text count


@pytest.mark.parametrize("argv", [["   "], ["query", "--where", "metadata=x"], ["query", "--where", "uri"]])
def test_cli_rejects_bad_input(collection, weights, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv + ["--db", collection[0], "--model", "centerclip-test", "--pretrained", weights])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ": error: " in err and err.count("\n") == 1


def test_pipeline_script_runs_main(collection, weights, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(PIPELINE), CAPTIONS[5], "--db", collection[0], "--json", "--k", "1",
                                      "--model", "centerclip-test", "--pretrained", weights])
    runpy.run_path(str(PIPELINE), run_name="__main__")
    assert json.loads(capsys.readouterr().out)[0]["uri"] == "/videos/5.mp4"
