import random
import statistics

import pytest
import torch

from centerclip.metrics import dual_softmax, ranks, retrieval_metrics, summarise


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
