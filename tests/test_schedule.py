import re
from pathlib import Path

import pytest

from centerclip import Schedule, Stage

EXAMPLES = [
    "none",
    "kmedoids@6:4x49",
    "kmedoids@4:6x98,8:2x49",
    "spectral@6:4x49",
    "spectral(normalize=true,self_loops=false)@6:4x49",
    "spectral(graph=knn,solver=eigh,rows=unit)@6:4x49",
    "kmedoids(self_distance=zero,sums=float64,chunk=1)@6:4x49",
    "spectral(normalize=true,self_loops=false,knn=8,knn_per_frame=0)@6:4x49",
    "spectral(sigma=0.5,knn_per_frame=3)@6:4x49",
    "kmedoids(keep=mean,distance=cosine)@3:2x10",
    "kmedoids(p=1.5,max_iter=20)@6:4x49",
    "pooling@6:4x49",
    "sparse(sampling=random,seed=3)@6:4x49",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_string_form_round_trips(text):
    schedule = Schedule.parse(text)
    assert str(schedule) == text
    assert Schedule.parse(str(schedule)) == schedule
    assert Schedule.from_dict(schedule.to_dict()) == schedule


def test_bare_spectral_is_the_published_variant():
    bare = Schedule.parse("spectral@6:4x49")
    assert (bare.normalize, bare.self_loops, bare.graph, bare.solver, bare.rows) == (False, True, "heat", "svd", "eps")
    assert (bare.self_distance, bare.sums, bare.chunk) == ("raw", "float32", 16)
    published = Schedule.parse("spectral(normalize=false,self_loops=true,graph=heat,solver=svd,rows=eps)@6:4x49")
    assert published == bare and str(published) == "spectral@6:4x49"


def test_ours_is_spelled_out_and_kept_through_dicts():
    ours = Schedule.parse("spectral(normalize=true,self_loops=false,graph=knn)@6:4x49")
    assert (ours.normalize, ours.self_loops, ours.graph) == (True, False, "knn")
    assert ours != Schedule.parse("spectral@6:4x49")
    values = ours.to_dict()
    assert (values["normalize"], values["self_loops"], values["graph"]) == (True, False, "knn")
    assert Schedule.from_dict(values) == ours
    # A dict read from JSON or YAML may carry its values as strings.
    assert Schedule.from_dict({**values, "normalize": "true", "self_loops": "false", "stages": [[6, 4, 49]]}) == ours


@pytest.mark.parametrize("text", ["none", "kmedoids@6:4x49", "pooling@6:4x49", "sparse@6:4x49"])
def test_other_algorithms_keep_their_defaults(text):
    schedule = Schedule.parse(text)
    assert str(schedule) == text
    assert (schedule.keep, schedule.distance, schedule.p, schedule.max_iter) == ("medoid", "euclidean", 2.0, 100)
    assert (schedule.sampling, schedule.seed) == ("uniform", 0)


def test_every_schedule_in_the_readme_table_is_written_as_printed():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Schedules\n", 1)[1].split("\n## ", 1)[0]
    strings = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert "spectral@6:4x49" in strings and len(strings) >= 8
    for text in strings:
        assert str(Schedule.parse(text)) == text


def test_parsed_fields():
    schedule = Schedule.parse("spectral(sigma=0.5)@4:6x98,8:2x49")
    assert schedule.algorithm == "spectral" and schedule.sigma == 0.5
    assert schedule.stages == (Stage(4, 6, 98), Stage(8, 2, 49))


@pytest.mark.parametrize("text,message", [
    ("kmeans@6:4x49", "unknown algorithm 'kmeans'"),
    ("kmedoids", "needs at least one stage"),
    ("none@6:4x49", "takes no stages"),
    ("kmedoids@6:4", "expected BLOCK:SEGMENTSxTOKENS"),
    ("kmedoids(colour=red)@6:4x49", "unknown schedule option"),
    ("kmedoids(max_iter=many)@6:4x49", "max_iter='many'"),
    ("kmedoids@8:4x49,6:2x49", "strictly increasing"),
    ("kmedoids(keep=centroid)@6:4x49", "unknown keep 'centroid'"),
    ("k medoids", "cannot parse schedule"),
    ("spectral(normalize=maybe)@6:4x49", "normalize='maybe' is not a valid bool"),
    ("spectral(knn_per_frame=-1)@6:4x49", "knn_per_frame >= 0"),
    ("spectral(knn=8)@6:4x49", "knn=8 has no effect while knn_per_frame=5 .* add knn_per_frame=0"),
])
def test_bad_strings_raise_value_error_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Schedule.parse(text)


@pytest.mark.parametrize("text,message", [
    ("kmedoids@12:4x49", r"block 12 is out of range: must be in \[1, 11\]"),
    ("kmedoids@0:4x49", "must all be >= 1"),
    ("kmedoids@6:5x49", r"5 segments do not divide the 12 frames .* \[1, 2, 3, 4, 6, 12\]"),
    ("kmedoids@6:4x148", r"148 tokens per segment is more than the 147 available; valid range \[1, 147\]"),
    ("kmedoids@4:6x98,8:4x49", "4 segments do not divide the 6 segments"),
    ("kmedoids@4:6x40,8:2x121", r"more than the 120 available"),
    ("pooling@6:4x20", "keeps exactly 49 tokens"),
])
def test_schedules_that_do_not_fit_the_model_raise(text, message):
    with pytest.raises(ValueError, match=message):
        Schedule.parse(text).validate(layers=12, frames=12, tokens_per_frame=49)


def test_paper_settings_fit():
    Schedule.parse("kmedoids@6:4x49").validate(layers=12, frames=12, tokens_per_frame=49)
    Schedule.parse("kmedoids@6:4x160").validate(layers=12, frames=12, tokens_per_frame=196)
