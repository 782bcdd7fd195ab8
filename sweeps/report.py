"""A sweep's report: one CSV row per trial, and a Pareto plot of text->video R@1 against GFLOPs per
video with each point's 95% interval as an error bar, labelled by its schedule in a column beside
the axes (so labels never overlap each other or the points), the front (nothing cheaper is as
accurate) drawn.
sweeps/sweep.py writes it when a sweep ends; this command writes it again from a sweep's folder
(e.g. while the sweep still runs, or after it was interrupted).

    python sweeps/report.py runs/sweeps/default       # STORAGE/NAME of the sweep
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: sys.path[0] is sweeps/, the repository root holds centerclip/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Light imports only: Ray Tune, pyarrow and matplotlib load inside the functions that use them.
from centerclip import cli  # noqa: E402

ACCURACY, COST = "text_to_video/R@1", "gflops_per_video"
FIRST = (COST, "ms_per_video", "peak_memory_mb")  # CSV columns after schedule and status, then the retrieval metrics
LAST = ("videos", "step", "loss", "time_total_s")
TABLE = {  # the printed table's columns: heading -> row key
    "schedule": "schedule", "GFLOPs": COST, "ms/video": "ms_per_video", "peak MB": "peak_memory_mb",
    **{f"t2v {name}": f"text_to_video/{name}" for name in ("R@1", "R@5", "R@10", "MdR", "MnR")},
    **{f"v2t {name}": f"video_to_text/{name}" for name in ("R@1", "R@5", "R@10", "MdR", "MnR")},
    "temporal t2v R@1": "temporal/text_to_video/R@1",
}


def trial_rows(experiment: str) -> list[dict]:
    """One row per trial of the Tune experiment at ``experiment``: its schedule, Tune status
    (TERMINATED when it finished or was stopped early, ERROR, PENDING, ...) and last reported
    metrics (the retrieval metrics are the keys holding a '/', e.g. text_to_video/R@1)."""
    from ray import tune

    rows = []
    for trial in tune.ExperimentAnalysis(experiment).trials:
        metrics = trial.last_result or {}
        measured = {key: value for key, value in metrics.items() if "/" in key}
        rows.append({"schedule": trial.config["schedule"], "status": trial.status,
                     **{key: metrics.get(key) for key in FIRST}, **measured,
                     **{key: metrics.get(key) for key in LAST}, "trial_id": trial.trial_id})
    return sorted(rows, key=lambda row: row["trial_id"])  # the order of the search space


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points that no other point beats (no more cost and more
    accuracy), by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def csv_text(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def pareto_png(rows: list[dict], title: str = "") -> bytes:
    from matplotlib.figure import Figure

    measured = sorted((row for row in rows if row.get(ACCURACY) is not None and row.get(COST) is not None),
                      key=lambda row: (row[COST], row[ACCURACY]))
    points = [(row[COST], row[ACCURACY]) for row in measured]
    shown = dodge(points)
    figure = Figure(figsize=(12, 7))
    figure.subplots_adjust(left=0.06, right=0.6, bottom=0.09, top=0.9)  # the labels' column is right of the axes
    axes = figure.subplots()
    family = [row["schedule"].split("(")[0].split("@")[0] for row in measured]
    colours = {}
    for algorithm in sorted(set(family)):
        mine = [(row, x) for row, (x, _), name in zip(measured, shown, family) if name == algorithm]
        low = [row[ACCURACY] - row.get(ACCURACY + "_low", row[ACCURACY]) for row, _ in mine]
        high = [row.get(ACCURACY + "_high", row[ACCURACY]) - row[ACCURACY] for row, _ in mine]
        drawn = axes.errorbar([x for _, x in mine], [row[ACCURACY] for row, _ in mine], yerr=[low, high],
                              fmt="o", markersize=5, capsize=3, elinewidth=1, alpha=0.85, label=algorithm, zorder=3)
        colours[algorithm] = drawn.lines[0].get_color()
    front = [points[i] for i in pareto_front(points)]
    if front:
        axes.step(*zip(*front), where="post", color="black", linewidth=1, zorder=2, label="Pareto front")
    if points:
        xs = [x for x, _ in shown]
        lows = [row.get(ACCURACY + "_low", row[ACCURACY]) for row in measured]
        highs = [row.get(ACCURACY + "_high", row[ACCURACY]) for row in measured]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(highs) - min(lows)) or 1.0
        axes.set_xlim(min(xs) - 0.05 * span_x, max(xs) + 0.05 * span_x)
        axes.set_ylim(min(lows) - 0.05 * span_y, max(highs) + 0.05 * span_y)
        place_labels(axes, shown, [row["schedule"] for row in measured], [colours[name] for name in family],
                     axes_height_pt=7 * 72 * (0.9 - 0.09))
    axes.set_xlabel("GFLOPs per video (vision tower; schedules of equal cost are spread sideways)")
    axes.set_ylabel("text->video R@1 (%), 95% bootstrap interval")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    return buffer.getvalue()


def dodge(points: list[tuple[float, float]], width: float = 0.08) -> list[tuple[float, float]]:
    """Points of equal cost spread sideways (by ``width`` of the cost range in all), so their error
    bars do not hide each other."""
    xs = [x for x, _ in points]
    step = width * ((max(xs) - min(xs)) or 1.0) if points else 0.0
    shown = []
    for i, (x, y) in enumerate(points):
        same = [j for j, other in enumerate(xs) if other == x]
        offset = (same.index(i) - (len(same) - 1) / 2) * step / max(1, len(same) - 1) if len(same) > 1 else 0.0
        shown.append((x + offset, y))
    return shown


def label_positions(targets: list[float], gap: float) -> list[float]:
    """Positions in [0, 1] as close as possible to ``targets`` (in [0, 1]) with at least ``gap``
    between any two, in the targets' order: push overlapping labels up, then back down from the
    top; if they cannot all fit, spread them evenly."""
    order = sorted(range(len(targets)), key=lambda i: targets[i])
    if gap * (len(targets) - 1) > 1:
        gap = 1 / max(1, len(targets) - 1)
    placed = [min(max(targets[i], 0.0), 1.0) for i in order]
    for j in range(1, len(placed)):
        placed[j] = max(placed[j], placed[j - 1] + gap)
    placed[-1] = min(placed[-1], 1.0)
    for j in range(len(placed) - 2, -1, -1):
        placed[j] = min(placed[j], placed[j + 1] - gap)
    positions = [0.0] * len(targets)
    for rank, i in enumerate(order):
        positions[i] = placed[rank]
    return positions


def place_labels(axes, points: list[tuple[float, float]], labels: list[str], colours: list, axes_height_pt: float,
                 fontsize: float = 7) -> None:
    """Every label in one column right of the axes, at its point's height where it fits (else
    nudged by the least needed), joined to its point by a thin line of its colour."""
    bottom, top = axes.get_ylim()
    targets = [(y - bottom) / (top - bottom) for _, y in points]
    positions = label_positions(targets, gap=1.35 * fontsize / axes_height_pt)
    for (x, y), label, colour, position in zip(points, labels, colours, positions):
        axes.annotate(label, (x, y), xytext=(1.04, position), textcoords="axes fraction", fontsize=fontsize,
                      va="center", color=colour, annotation_clip=False,
                      arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": colour, "alpha": 0.45, "shrinkA": 0,
                                  "shrinkB": 3})


def write(rows: list[dict], folder: str, title: str = "") -> list[str]:
    """trials.csv and pareto.png (titled ``title``) in ``folder`` (a local path or a pyarrow.fs
    URI); returns their paths."""
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(folder)
    filesystem.create_dir(path, recursive=True)
    files = {"trials.csv": csv_text(rows).encode(), "pareto.png": pareto_png(rows, title)}
    for name, content in files.items():
        with filesystem.open_output_stream(f"{path}/{name}") as stream:
            stream.write(content)
    return [f"{folder.rstrip('/')}/{name}" for name in files]


def markdown_table(rows: list[dict]) -> str:
    columns = {heading: key for heading, key in TABLE.items() if any(row.get(key) is not None for row in rows)}
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in sorted(rows, key=lambda row: (row.get(COST) is None, -(row.get(COST) or 0), row["schedule"])):
        cells = [row["schedule"] + ("" if row["status"] == "TERMINATED" else f" ({row['status']})")]
        cells += [_cell(row, key) for key in list(columns.values())[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row: dict, key: str) -> str:
    """The value, and its 95% interval where the row has one: ``26.25 [24.5, 28.0]``."""
    value = row.get(key)
    text = "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
    if row.get(key + "_low") is not None:
        text += f" [{row[key + '_low']:.4g}, {row[key + '_high']:.4g}]"
    return text


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="the sweep's folder, STORAGE/NAME (e.g. runs/sweeps/default) or s3://...")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Write trials.csv and pareto.png into a sweep's folder and print its table; returns the rows."""
    parser = build_parser()
    experiment = parser.parse_args(argv).experiment
    if "://" not in experiment:
        if not Path(experiment).is_dir():
            parser.error(f"{experiment}: no such folder (a sweep's folder is STORAGE/NAME of its YAML file)")
        if not any(Path(experiment).glob("experiment_state*.json")):
            parser.error(f"{experiment} holds no Tune experiment: pass the folder sweeps/sweep.py wrote (STORAGE/NAME)")
        experiment = str(Path(experiment).resolve())
    rows = trial_rows(experiment)
    written = write(rows, experiment)
    print(markdown_table(rows))
    print("\n".join(f"wrote {path}" for path in written))
    return rows


if __name__ == "__main__":
    cli.run(main)
