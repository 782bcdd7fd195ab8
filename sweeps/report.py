"""A sweep's report: one CSV row per trial, and a Pareto plot of text->video R@1 against GFLOPs per
video, each point labelled by its schedule, the front (nothing cheaper is as accurate) drawn.
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

    measured = [row for row in rows if row.get(ACCURACY) is not None and row.get(COST) is not None]
    points = [(row[COST], row[ACCURACY]) for row in measured]
    labels = [row["schedule"] for row in measured]
    figure = Figure(figsize=(10, 6.5))
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.09, top=0.94)  # fixed, so label sizes are known in data units
    axes = figure.subplots()
    family = [label.split("(")[0].split("@")[0] for label in labels]
    colours = {}
    for algorithm in sorted(set(family)):
        drawn = axes.scatter(*zip(*[point for point, name in zip(points, family) if name == algorithm]), label=algorithm, zorder=3)
        colours[algorithm] = drawn.get_facecolor()[0]
    front = [points[i] for i in pareto_front(points)]
    if front:
        axes.step(*zip(*front), where="post", color="black", linewidth=1, zorder=2, label="Pareto front")
    if points:
        place_labels(axes, points, labels, [colours[name] for name in family], (9.0 * 72, 6.5 * 0.85 * 72))
    axes.set_xlabel("GFLOPs per video (vision tower)")
    axes.set_ylabel("text->video R@1 (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    return buffer.getvalue()


def place_labels(axes, points: list[tuple[float, float]], labels: list[str], colours: list, size_pt: tuple[float, float],
                 fontsize: float = 7) -> None:
    """Label every point to its right; a label that would cover a point or a label already placed
    moves up (a line of its point's colour then joins them). Schedules of equal cost share a vertical line, so their
    labels would otherwise sit on top of each other. Sizes are estimated from the axes' size."""
    xs, ys = zip(*points)
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    widths_pt = [len(label) * 0.55 * fontsize for label in labels]
    left, bottom, top = min(xs) - 0.05 * span_x, min(ys) - 0.08 * span_y, max(ys) + 0.08 * span_y
    # Room for every label right of its point: x + width_pt * (right - left) / axes_width <= right.
    right = max((x + 0.03 * span_x - f * left) / (1 - f) for x, f in zip(xs, (w / size_pt[0] for w in widths_pt)))
    per_x, per_y = (right - left) / size_pt[0], (top - bottom) / size_pt[1]  # data units per point
    height, gap, marker = 1.3 * fontsize * per_y, 4 * per_x, 3.5
    boxes = [(x - marker * per_x, x + marker * per_x, y - marker * per_y, y + marker * per_y) for x, y in points]
    for i in sorted(range(len(points)), key=lambda i: points[i][1]):
        x, y = points[i][0] + gap, points[i][1] - height / 2
        width = widths_pt[i] * per_x
        while any(x < x1 and x0 < x + width and y < y1 and y0 < y + height for x0, x1, y0, y1 in boxes):
            y += height / 4
        boxes.append((x, x + width, y, y + height))
        moved = y > points[i][1] - height / 2
        axes.annotate(labels[i], points[i], xytext=(x, y + height / 2), fontsize=fontsize, va="center", color=colours[i],
                      arrowprops={"arrowstyle": "-", "linewidth": 0.8, "color": colours[i], "shrinkA": 0} if moved else None)
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, max(top, max(box[3] for box in boxes) + height / 2))


def write(rows: list[dict], folder: str) -> list[str]:
    """trials.csv and pareto.png in ``folder`` (a local path or a pyarrow.fs URI); returns their paths."""
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(folder)
    filesystem.create_dir(path, recursive=True)
    files = {"trials.csv": csv_text(rows).encode(), "pareto.png": pareto_png(rows, folder.rstrip("/").rsplit("/", 1)[-1])}
    for name, content in files.items():
        with filesystem.open_output_stream(f"{path}/{name}") as stream:
            stream.write(content)
    return [f"{folder.rstrip('/')}/{name}" for name in files]


def markdown_table(rows: list[dict]) -> str:
    columns = {heading: key for heading, key in TABLE.items() if any(row.get(key) is not None for row in rows)}
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in sorted(rows, key=lambda row: (row.get(COST) is None, -(row.get(COST) or 0), row["schedule"])):
        cells = [row["schedule"] + ("" if row["status"] == "TERMINATED" else f" ({row['status']})")]
        cells += [_cell(row.get(key)) for key in list(columns.values())[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


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
