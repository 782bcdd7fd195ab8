import random
import statistics

import pytest
import torch

import numpy as np

from centerclip.train.metrics import bootstrap_intervals, dual_softmax, ranks, retrieval_metrics, summarise


def worst_case_rank(scores: list[float], positives: set[int]) -> int:
    """Independent reference: sort the gallery with every tie broken against the positives, and
    return the 1-based position of the first positive."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i in positives))
    return next(position for position, item in enumerate(order, 1) if item in positives)


def reference_summary(all_ranks: list[int]) -> dict[str, float]:
    summary = {f"R@{k}": 100 * sum(r <= k for r in all_ranks) / len(all_ranks) for k in (1, 5, 10)}
    return {**summary, "MdR": statistics.median(all_ranks), "MnR": statistics.mean(all_ranks)}


@pytest.mark.parametrize("seed", range(5))
def test_ranks_match_an_independent_implementation_with_ties(seed):
    rng = random.Random(seed)
    captions, videos = 37, 12
    caption_video = [rng.randrange(videos) for _ in range(captions)]
    caption_video[:videos] = range(videos)  # every video has a caption
    scores = [[float(rng.randrange(4)) for _ in range(videos)] for _ in range(captions)]  # many ties
    similarity = torch.tensor(scores)
    positives = torch.tensor(caption_video)[:, None] == torch.arange(videos)[None, :]

    text_to_video = [worst_case_rank(row, {caption_video[c]}) for c, row in enumerate(scores)]
    video_to_text = [worst_case_rank([scores[c][v] for c in range(captions)],
                                     {c for c in range(captions) if caption_video[c] == v}) for v in range(videos)]
    assert ranks(similarity, positives).tolist() == text_to_video
    assert ranks(similarity.T, positives.T).tolist() == video_to_text
    for ours, reference in [(summarise(ranks(similarity, positives)), reference_summary(text_to_video)),
                            (summarise(ranks(similarity.T, positives.T)), reference_summary(video_to_text))]:
        assert ours == pytest.approx(reference)


def test_constant_similarity_is_ranked_last():
    similarity = torch.zeros(4, 4)
    assert ranks(similarity, torch.eye(4, dtype=torch.bool)).tolist() == [4, 4, 4, 4]


def test_perfect_embeddings_and_both_directions():
    video = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    text = torch.cat([video, video[:2]])  # videos 0 and 1 have two captions
    caption_video = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    results = retrieval_metrics(text, video, caption_video, dsl=True)
    for direction in ("text_to_video", "video_to_text", "text_to_video_dsl", "video_to_text_dsl"):
        assert results[direction]["R@1"] == 100.0 and results[direction]["MnR"] == 1.0


def test_dual_softmax_discounts_a_hub_video():
    # Video 0 is everyone's favourite; DSL lets caption 1 find its own video 1.
    similarity = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    positives = torch.eye(2, dtype=torch.bool)
    assert ranks(similarity, positives).tolist() == [1, 2]
    assert ranks(dual_softmax(similarity), positives).tolist() == [1, 1]


def test_bad_inputs():
    with pytest.raises(ValueError, match="without any caption: \\[2\\]"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="differ in shape"):
        ranks(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(3))
def test_best_caption_video_to_text_matches_the_published_protocol_with_ties(seed):
    """Each candidate video is scored by its best caption; the query video is ranked among
    videos, pessimistically on ties. Reference: plain loops."""
    rng = random.Random(seed)
    videos, captions = 10, 41
    caption_video = list(range(videos)) + [rng.randrange(videos) for _ in range(captions - videos)]
    scores = [[float(rng.randrange(5)) for _ in range(videos)] for _ in range(captions)]  # [C, V], many ties
    expected = []
    for v in range(videos):
        per_video = [max(scores[c][v] for c in range(captions) if caption_video[c] == u) for u in range(videos)]
        expected.append(worst_case_rank(per_video, {v}))
    text = torch.tensor(scores)  # with an identity "video" embedding, text @ video.T == scores
    results = retrieval_metrics(text, torch.eye(videos), torch.tensor(caption_video), bootstrap=0)
    assert results["video_to_text"] == pytest.approx(reference_summary(expected))
    every = retrieval_metrics(text, torch.eye(videos), torch.tensor(caption_video), bootstrap=0,
                              video_to_text="every-caption")
    per_caption = [worst_case_rank([scores[c][v] for c in range(captions)],
                                   {c for c in range(captions) if caption_video[c] == v}) for v in range(videos)]
    assert every["video_to_text"] == pytest.approx(reference_summary(per_caption))
    assert every["text_to_video"] == results["text_to_video"]


def test_the_protocols_differ_on_many_captions_and_agree_on_one():
    generator = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(60, 16, generator=generator), dim=-1)
    caption_video = torch.arange(60).repeat_interleave(5)
    text = torch.nn.functional.normalize(video[caption_video] + 0.9 * torch.randn(300, 16, generator=generator), dim=-1)
    best = retrieval_metrics(text, video, caption_video, bootstrap=0)["video_to_text"]
    every = retrieval_metrics(text, video, caption_video, bootstrap=0, video_to_text="every-caption")["video_to_text"]
    assert best["R@1"] == every["R@1"]  # the best caption of the top video is the top caption
    assert best["MnR"] < every["MnR"]  # other videos' captions beyond their best no longer count
    single = text[::5]
    one = [retrieval_metrics(single, video, torch.arange(60), bootstrap=0, video_to_text=protocol)["video_to_text"]
           for protocol in ("best-caption", "every-caption")]
    assert one[0] == one[1]


def test_bootstrap_intervals_are_seeded_bracket_the_estimate_and_match_the_binomial_width():
    rng = np.random.default_rng(1)
    query_ranks = torch.from_numpy(rng.geometric(0.3, size=2500))
    point = summarise(query_ranks)
    intervals = bootstrap_intervals(query_ranks, resamples=2000, seed=0)
    assert intervals == bootstrap_intervals(query_ranks, resamples=2000, seed=0)
    assert intervals != bootstrap_intervals(query_ranks, resamples=2000, seed=1)
    for name, value in point.items():
        assert intervals[f"{name}_low"] <= value <= intervals[f"{name}_high"], name
    p = point["R@1"] / 100
    binomial = 1.96 * np.sqrt(p * (1 - p) / len(query_ranks)) * 100
    assert intervals["R@1_high"] - intervals["R@1_low"] == pytest.approx(2 * binomial, rel=0.1)
    small = bootstrap_intervals(query_ranks[:250], resamples=2000, seed=0)
    assert small["R@1_high"] - small["R@1_low"] > 2.5 * (intervals["R@1_high"] - intervals["R@1_low"])


def test_metrics_carry_intervals_and_reject_an_unknown_protocol():
    video = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    results = retrieval_metrics(video, video, torch.arange(30), dsl=True)
    for direction in ("text_to_video", "video_to_text", "text_to_video_dsl", "video_to_text_dsl"):
        assert {"R@1_low", "R@1_high", "MdR_low", "MdR_high", "MnR_low", "MnR_high"} <= set(results[direction])
    with pytest.raises(ValueError, match="unknown video->text protocol 'per-video'"):
        retrieval_metrics(video, video, torch.arange(30), video_to_text="per-video")


def test_paired_differences_see_a_small_shift_that_separate_intervals_miss():
    from centerclip.train.metrics import paired_differences

    rng = np.random.default_rng(0)
    baseline = rng.geometric(0.4, 2000)  # about 40% at rank 1
    # The same queries, 3% of them one rank worse: R@1 falls by at most 3 points, every time.
    worse = baseline + (rng.random(2000) < 0.03)
    differences = paired_differences(torch.from_numpy(baseline), torch.from_numpy(worse), resamples=500)
    delta, low, high = differences["R@1"]
    assert delta < 0 and low <= delta <= high < 0  # shown, though the unpaired intervals overlap
    separate = [bootstrap_intervals(torch.from_numpy(r), resamples=500) for r in (baseline, worse)]
    assert separate[1]["R@1_high"] > separate[0]["R@1_low"]
    assert differences["MnR"][1] > 0
    same = paired_differences(torch.from_numpy(baseline), torch.from_numpy(baseline), resamples=200)
    assert all(value == (0.0, 0.0, 0.0) for value in same.values())
    with pytest.raises(ValueError, match="same queries"):
        paired_differences(torch.ones(3), torch.ones(4))
