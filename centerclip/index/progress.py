"""What an indexing run shows: one progress bar (videos, moments, errors, videos/s, ETA), other
libraries' notices kept out of the way, and a summary in words.

Progress objects are context managers with ``update(videos, moments, errors)`` (counts of one
written batch), built as ``progress(total)`` by pipelines/index.py's run(), and optionally
``grow(total)``: the listing goes on while the first videos are indexed, so the total grows.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import warnings

from ..cli import Drop

log = logging.getLogger("centerclip.index")

# Notices that say nothing actionable to someone indexing on one machine: Ray's note that a local
# cluster has token auth on (it is, and should be), Ray Data's note that we turned its bars off for
# ours, and Ray core's warning that restarted actors may lose constructor arguments held in the
# object store (Ray Data puts every map actor's arguments there: ray-project/ray#53727).
# Ray Data logs a pass that lost its work with a traceback; the engine says it in one line and goes on.
RAY_NOTICES = ("Token authentication is enabled for this Ray cluster", "Progress bars disabled",
               "An exception was raised from a task of operator")
CORE_WORKER_NOTICES = (b"has constructor arguments in the object store",)


class LoggedProgress:
    """Progress as log lines, one per written batch (for library use and non-interactive output)."""

    def __init__(self, total: int, every: float = 0.0):
        self.total, self.every = total, every
        self.videos = self.moments = self.errors = 0
        self.started = self.logged = time.perf_counter()

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.every:
            self._log()

    def grow(self, total: int) -> None:
        """The listing found more: ``total`` videos to index so far."""
        self.total = total

    def update(self, videos: int, moments: int, errors: int) -> None:
        self.videos, self.moments, self.errors = self.videos + videos, self.moments + moments, self.errors + errors
        if time.perf_counter() - self.logged >= self.every:
            self._log()

    def _log(self) -> None:
        self.logged = time.perf_counter()
        log.info("indexed %d/%d videos (%d moments), %d failed, %.1f videos/s since indexing began", self.videos,
                 self.total, self.moments, self.errors, (self.videos + self.errors) / max(self.logged - self.started, 1e-9))


class IndexProgress:
    """One tqdm bar on a terminal (a line every 30 s otherwise, e.g. in `ray job submit` logs).
    While it runs, Ray core's known notice about actor constructor arguments is filtered out of
    stderr: Ray prints it from C++, so no logging setting reaches it."""

    def __init__(self, total: int):
        self.total = total
        self.moments = self.errors = 0
        self.bar = None
        self.lines = None if sys.stderr.isatty() else LoggedProgress(total, every=30.0)
        self.stderr = _DropStderrLines(CORE_WORKER_NOTICES)

    def __enter__(self) -> IndexProgress:
        terminal = self.stderr.__enter__()
        if self.lines is None:
            from tqdm import tqdm

            # smoothing=0: the rate is the average since indexing began, as the summary reports it.
            self.bar = tqdm(total=self.total, unit="video", desc="indexing", file=terminal, smoothing=0,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos "
                                       "[{elapsed}<{remaining}, {rate_noinv_fmt} since indexing began]{postfix}")
            self.bar.set_postfix_str("0 moments, 0 failed")
        return self

    def grow(self, total: int) -> None:
        """The listing found more: ``total`` videos to index so far."""
        self.total = total
        if self.bar is None:
            self.lines.grow(total)
        else:
            self.bar.total = total
            self.bar.refresh()

    def update(self, videos: int, moments: int, errors: int) -> None:
        if self.bar is None:
            self.lines.update(videos, moments, errors)
            return
        self.moments, self.errors = self.moments + moments, self.errors + errors
        self.bar.set_postfix_str(f"{self.moments} moments, {self.errors} failed", refresh=False)
        self.bar.update(videos + errors)

    def __exit__(self, *exc) -> None:
        try:
            if self.bar is not None:
                self.bar.close()
            else:
                self.lines.__exit__(*exc)
        finally:
            self.stderr.__exit__(*exc)


class _DropStderrLines:
    """Forward everything written to file descriptor 2 (C++ libraries write there directly)
    except lines holding one of ``texts``. Entering returns a text stream on the real stderr."""

    def __init__(self, texts: tuple[bytes, ...]):
        self.texts = texts

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._forward, args=(read, os.dup(self.saved)), daemon=True)
        self.thread.start()
        self.terminal = os.fdopen(os.dup(self.saved), "w", buffering=1)
        return self.terminal

    def _forward(self, read: int, out: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe, os.fdopen(out, "wb", buffering=0) as target:
            for line in pipe:
                if not any(text in line for text in self.texts):
                    target.write(line)

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        self.terminal.close()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the forwarder reads to its end and stops
        os.close(self.saved)
        self.thread.join(timeout=2)


def quiet_ray() -> None:
    """Before Ray starts: its console handlers show warnings and errors only, without the notices
    above; Ray Data's own progress bars give way to ours; LanceDB's warning about forking is
    dropped (Ray forks only to exec its own processes, which never touch LanceDB's runtime)."""
    import ray.data  # configures Ray Data's loggers, which the loop below adjusts

    notices = Drop(*RAY_NOTICES)
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):  # the console; Ray's log files keep everything
                handler.setLevel(max(handler.level, logging.WARNING))
                handler.addFilter(notices)
    ray.data.DataContext.get_current().enable_progress_bars = False
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)


def describe_index(summary: dict, exact_below: int) -> str:
    """The ANN index state, in words."""
    if summary["ann_index"] == "none":
        if summary["rows_in_table"] < exact_below:
            return f"exact search (an ANN index is built once the table holds {exact_below:,} rows)"
        return "ANN index up to date"
    return {"created": "ANN index created", "rebuilt": "ANN index rebuilt for the grown table",
            "updated": "new rows added to the ANN index"}.get(summary["ann_index"], summary["ann_index"])


def format_summary(summary: dict) -> str:
    """An indexing run's summary (pipelines/index.py's run()) for a person to read."""
    from .store import IndexConfig

    # The counters and rates of the progress line, named the same way.
    done = (f"Indexed {summary['videos']} videos ({summary['moments']} moments), {summary['failed_now']} failed, "
            f"in {summary['seconds']:.0f} s")
    if summary["videos"] + summary["failed_now"]:
        done += f": {summary['videos_per_s']:.1f} videos/s over the whole run"
        if "indexing_videos_per_s" in summary:
            done += f", {summary['indexing_videos_per_s']:.1f} since indexing began"
    if summary["already_indexed"]:
        done += f"; {summary['already_indexed']} were already indexed"
    lines = [done + "."]
    if "nodes" in summary:
        lines.append(f"Decoded on {summary['nodes']['decoded_on']} nodes, encoded on {summary['nodes']['encoded_on']}.")
    if "retried" in summary:
        retried = summary["retried"]
        lines.append(f"{retried['videos']} videos were indexed again after the cluster lost their work, in "
                     f"{retried['passes']} passes ({'; '.join(retried['why'])}).")
    if summary["failed_before"]:
        lines.append(f"{summary['failed_before']} inputs failed before and have not changed: not tried again "
                     "(--retry-errors tries them).")
    if "pruned" in summary:
        pruned = summary["pruned"]
        lines.append(f"Pruned {pruned['videos']} videos that are gone ({pruned['rows']} rows) and {pruned['errors']} error rows.")
    lines.append(f"{summary['db']} (table {summary['table']}): {summary['rows_in_table']} rows, "
                 f"{describe_index(summary, IndexConfig().min_rows)}.")
    if summary["failures"]["count"]:
        lines += ["", format_failures(summary)]
    search = summary.get("search")
    if search:
        lines += ["", f"Search: \"{search['query']}\""]
        for rank, result in enumerate(search["results"], 1):
            span = "whole video" if result["start"] is None else f"{result['start']:.1f}-{result['end']:.1f} s"
            described = "   <- the video it describes" if search["expected"] and result["uri"].endswith(f"/{search['expected']}") else ""
            lines.append(f"  {rank}. {result['score']:.3f}  {result['uri']}  ({span}){described}")
    sample = summary.get("sample")
    if sample:
        lines.append(f"The video it describes, {search['expected']}, ranks {ordinal(search['rank'])} of {sample['videos']}.")
        lines.append(f"Over all {sample['captions']} captions of the {sample['videos']} sample videos, the described video "
                     f"comes first for {sample['R@1']:.0f}% (R@1) and in the top 5 for {sample['R@5']:.0f}% (R@5); "
                     f"median rank {sample['median_rank']:g}.")
        lines.append("The built-in model is tiny and trained only on synthetic clips: use --model/--pretrained "
                     "for real footage.")
    lines += ["", f"Next: python pipelines/search.py \"a red circle moves left\" --db {summary['db']}"]
    return "\n".join(lines)


def format_failures(summary: dict) -> str:
    """The inputs not indexed, grouped by reason: the first few, then how many more."""
    found = summary["failures"]
    if not found["count"]:
        return ""
    lines = [f"{found['count']} inputs not indexed (failed in this run or before, or not videos), by reason:"]
    for group, count in found["by_reason"].items():
        lines.append(f"  {group} ({count})")
        for row in found["first"]:
            if reason_group(row["reason"]) == group:
                detail = row["reason"][len(group) + 2:]
                lines.append(f"    {json.dumps(row['uri'])[1:-1] if not row['uri'].isprintable() else row['uri']}"
                             + (f"  ({detail})" if detail else ""))
    if found["count"] > len(found["first"]):
        lines.append(f"  ... and {found['count'] - len(found['first'])} more")
    lines.append(f"all errors: python pipelines/index.py --db {summary['db']} --table {summary['table']} --list-errors")
    return "\n".join(lines)


def reason_group(reason: str) -> str:
    """"cannot decode: moov atom not found" -> "cannot decode": the part without file details."""
    return reason.partition(": ")[0]


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
