"""Scenes and captions of the synthetic benchmark: what happens in each video and how the
grammar describes it. Pure functions of a seeded generator; ``synthetic`` renders and writes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# Inside-masks over offsets (u, v) from a thing's centre, in units of its radius; u and v
# broadcast to [frames, height, width], so a whole video is drawn with one expression per copy.
SHAPES = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8),
    "triangle": lambda u, v: (v <= 0.75) & (np.abs(u) <= 0.6 * (v + 0.95)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "cross": "crosses"}
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
BACKGROUNDS = {"black": (15, 15, 15), "gray": (120, 120, 120), "white": (240, 240, 240)}
RADII = {"small": 0.08, "large": 0.13}  # in frame widths
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
DISTANCES = {"slowly": 0.3, "quickly": 0.65}  # frame widths crossed during the event
SPACING = 2.4  # centre distance between copies of a group, in radii
MARGIN = 0.02
SECONDS = (4, 8)
CAPTIONS_PER_VIDEO = 5

# Each event happens inside its own slot of the video; visibility as a function of the
# event's progress (0 before, 1 after) decides appearing and disappearing.
VISIBILITY = {
    "moves": lambda progress: np.ones(progress.shape, bool),
    "appears": lambda progress: progress >= 0.5,
    "disappears": lambda progress: progress < 0.5,
}

# Ten pairs repeat: 70% train, 10% val, 20% test; half of the test pairs are twins, so half of the
# test queries are temporal.
PAIR_PLAN = (
    ("test", True), ("train", True), ("val", True), ("train", False), ("train", True),
    ("test", False), ("train", True), ("train", False), ("train", False), ("train", True),
)  # fmt: skip

# Paraphrases: a caption draws one index per family and uses it (modulo the number of choices)
# for every word of that family, so twins drawn with the same indices differ only in the words
# their scenes differ in.
WORDS = {
    "count": {1: ("a", "one"), 2: ("two",), 3: ("three",)},
    "size": {"small": ("small", "little"), "large": ("large", "big")},
    "background": {"black": ("black",), "gray": ("gray", "grey"), "white": ("white",)},
    "direction": {
        "left": ("left", "to the left"),
        "right": ("right", "to the right"),
        "up": ("up", "upward"),
        "down": ("down", "downward"),
    },
    "speed": {"slowly": ("slowly",), "quickly": ("quickly", "fast")},
    "action": {  # (singular, plural) verb forms
        "moves": (("moves", "move"), ("travels", "travel")),
        "appears": (("appears", "appear"), ("shows up", "show up")),
        "disappears": (("disappears", "disappear"), ("vanishes", "vanish")),
    },
    "motion": {"": ("{verb} {direction} {speed}", "{verb} {speed} {direction}")},
    "sequence": {"": ("{0}, then {1}", "first {0}, and then {1}", "{1} after {0}", "{0} before {1}")},
    "sentence": {
        "": (
            "{body} on a {background} background",
            "on a {background} background, {body}",
            "{body}; the background is {background}",
        )
    },
}


@dataclass(frozen=True)
class Thing:
    shape: str
    color: str
    size: str
    count: int


@dataclass(frozen=True)
class Event:
    thing: Thing
    action: str  # a key of VISIBILITY
    start: tuple[float, float]  # centre of the group before the event, in frame widths
    end: tuple[float, float]  # and after it (the same unless the thing moves)
    direction: str | None = None
    speed: str | None = None


@dataclass(frozen=True)
class Scene:
    background: str
    seconds: int
    events: tuple[Event, ...]  # in the order they happen


@dataclass(frozen=True)
class Video:
    video_id: str
    split: str
    scene: Scene
    captions: tuple[str, ...]
    twin: str | None  # the partner that differs only in time, when it is part of this benchmark


def _pick(rng: np.random.Generator, options: Sequence) -> object:
    return options[int(rng.integers(len(options)))]


def random_thing(rng: np.random.Generator, background: str, count: int, unlike: Thing | None = None) -> Thing:
    """A thing whose colour shows on the background and, given ``unlike``, differs from it in shape and colour."""
    shapes = [shape for shape in SHAPES if unlike is None or shape != unlike.shape]
    colors = [c for c in COLORS if c != background and (unlike is None or c != unlike.color)]
    return Thing(_pick(rng, shapes), _pick(rng, colors), _pick(rng, list(RADII)), count)


def _extent(thing: Thing) -> tuple[float, float]:
    """Half-sizes of a group (along its motion, across it) in frame widths, margin included."""
    radius = RADII[thing.size]
    return radius + MARGIN, radius + SPACING * radius * (thing.count - 1) / 2 + MARGIN


def _moving(rng: np.random.Generator, thing: Thing) -> Event:
    direction, speed = _pick(rng, list(DIRECTIONS)), _pick(rng, list(DISTANCES))
    along, across = _extent(thing)
    distance = DISTANCES[speed]
    first = float(rng.uniform(along, 1 - along - distance))
    last = first + distance
    if sum(DIRECTIONS[direction]) < 0:  # left and up: the same span, mirrored
        first, last = 1 - first, 1 - last
    side = float(rng.uniform(across, 1 - across))
    horizontal = DIRECTIONS[direction][0] != 0
    start, end = ((first, side), (last, side)) if horizontal else ((side, first), (side, last))
    return Event(thing, "moves", _rounded(start), _rounded(end), direction, speed)


def _still(rng: np.random.Generator, thing: Thing, action: str) -> Event:
    along, across = _extent(thing)
    centre = _rounded((float(rng.uniform(across, 1 - across)), float(rng.uniform(along, 1 - along))))
    return Event(thing, action, centre, centre)


def _rounded(point: tuple[float, float]) -> tuple[float, float]:
    return (round(point[0], 4), round(point[1], 4))


def random_scene(rng: np.random.Generator) -> Scene:
    """One group moving for the whole clip, or two single things acting one after the other."""
    background = _pick(rng, list(BACKGROUNDS))
    seconds = int(rng.integers(SECONDS[0], SECONDS[1] + 1))
    if rng.random() < 0.5:
        thing = random_thing(rng, background, count=int(rng.integers(1, 4)))
        return Scene(background, seconds, (_moving(rng, thing),))
    first = random_thing(rng, background, count=1)
    second = random_thing(rng, background, count=1, unlike=first)
    events = []
    for thing in (first, second):
        action = _pick(rng, list(VISIBILITY))
        events.append(_moving(rng, thing) if action == "moves" else _still(rng, thing, action))
    return Scene(background, seconds, tuple(events))


def twin(scene: Scene) -> Scene:
    """The scene played backwards (one moving group) or with its two events swapped."""
    if len(scene.events) == 1:
        (event,) = scene.events
        backwards = dataclasses.replace(event, start=event.end, end=event.start, direction=OPPOSITE[event.direction])
        return dataclasses.replace(scene, events=(backwards,))
    return dataclasses.replace(scene, events=scene.events[::-1])


def random_style(rng: np.random.Generator) -> dict[str, int]:
    # 12 is a multiple of every family's number of choices, so the modulo picks them evenly.
    return {family: int(rng.integers(12)) for family in WORDS}


def _word(family: str, key: object, style: dict[str, int]) -> object:
    choices = WORDS[family][key]
    return choices[style[family] % len(choices)]


def _clause(event: Event, style: dict[str, int]) -> str:
    thing = event.thing
    noun = thing.shape if thing.count == 1 else PLURALS[thing.shape]
    subject = f"{_word('count', thing.count, style)} {_word('size', thing.size, style)} {thing.color} {noun}"
    verb = _word("action", event.action, style)[thing.count > 1]
    if event.action != "moves":
        return f"{subject} {verb}"
    template = _word("motion", "", style)
    return f"{subject} " + template.format(
        verb=verb, direction=_word("direction", event.direction, style), speed=_word("speed", event.speed, style)
    )


def caption(scene: Scene, style: dict[str, int]) -> str:
    clauses = [_clause(event, style) for event in scene.events]
    body = clauses[0] if len(clauses) == 1 else _word("sequence", "", style).format(*clauses)
    return _word("sentence", "", style).format(body=body, background=_word("background", scene.background, style))


def plan(videos: int, seed: int) -> list[Video]:
    """Scenes, captions, splits and twins of the first ``videos`` videos (each pair depends on (seed, pair) only)."""
    planned = []
    for pair in range((videos + 1) // 2):
        split, twins = PAIR_PLAN[pair % len(PAIR_PLAN)]
        rng = np.random.default_rng([seed, pair])
        first = random_scene(rng)
        scenes = (first, twin(first) if twins else random_scene(rng))
        styles = [random_style(rng) for _ in range(CAPTIONS_PER_VIDEO)]
        for member, scene in enumerate(scenes):
            index, partner = 2 * pair + member, 2 * pair + 1 - member
            if index < videos:
                captions = tuple(dict.fromkeys(caption(scene, style) for style in styles))
                has_twin = twins and partner < videos
                planned.append(Video(f"video{index}", split, scene, captions, f"video{partner}" if has_twin else None))
    return planned
