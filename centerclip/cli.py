"""What every command line of the project shares: a parser whose errors are one line, and a
runner that turns the mistakes a user can make (a bad path, schedule, weights file, database...)
into one line on stderr and exit status 2 instead of a traceback. ``--debug`` or CENTERCLIP_DEBUG=1
shows the traceback. Light on purpose: CLIs import it before parsing, so --help stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, TypeVar

DEBUG_ENV = "CENTERCLIP_DEBUG"
USAGE_STATUS = 2  # argparse's status for a bad command line; ours for any bad input
# Bad input, as the library reports it: ValueError (bad values, formats, schedules, weights) and
# OSError (missing or unreadable files, no network). Anything else is a bug and keeps its traceback.
EXPECTED = (ValueError, OSError)
STOPPED_STATUS = 1  # a job that could not go on, its inputs fine


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, as a KeyboardInterrupt that knows its signal (exit status 128 +
    signal: 130, 143) and, once a job has unwound, what it kept (``done``)."""

    def __init__(self, signum: int = signal.SIGINT, done: str = ""):
        super().__init__(done)
        self.signum, self.done = signum, done


_received: list[int] = []  # the stop signals this process was sent


def _terminated(signum, frame):
    _received.append(signum)
    raise Interrupted(signum)


def stop_on_sigterm() -> None:
    """SIGTERM stops a command the way Ctrl-C does: it unwinds, says what was kept and exits 143.
    Set when a command starts and again once Ray is up, whose core worker installs a SIGTERM
    handler that aborts the process with a stack dump (exit 134)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """While a stopping job shuts Ray down (seconds): a second Ctrl-C or SIGTERM is acknowledged,
    not acted on. Interrupting ray.shutdown() leaves Ray's agents running and prints a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def acknowledge(signum, frame):
        os.write(sys.stderr.fileno(), b"still stopping: shutting Ray down, a few seconds\n")

    previous = {signum: signal.signal(signum, acknowledge) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class JobStopped(RuntimeError):
    """A long job that cannot go on through no fault of its inputs (a cluster that cannot host its
    actors, or keeps losing them); what is done is kept, and a re-run goes on from there."""

T = TypeVar("T")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a --debug flag and errors on one line. Flags are never abbreviated: with
    prefix matching a typo, or a flag that a later version adds, silently becomes another flag
    (``--moments scenes`` would be read as ``--moments-after scenes``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")

    def error(self, message: str) -> None:
        self.exit(USAGE_STATUS, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def schedule(text: str) -> str:
    """argparse type: a schedule string (checked against the model later, once it is loaded)."""
    from .model.schedule import Schedule  # light: no torch

    try:
        return str(Schedule.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def decode_options(text: str) -> str:
    """argparse type: ``--decode`` options (SamplingConfig.parse_options), checked before any work."""
    from .media.decoding import SamplingConfig  # light: PyAV and decord, no torch

    try:
        SamplingConfig.parse_options(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return text


DECODE_HELP = ("how frames are decoded, comma-separated: threads=N, skip=unneeded, seek, snap=reference|keyframe, "
               "max_shift=F, interpolation=bicubic|bilinear|area|fast_bilinear (default: %(default)r; README, 'Decoding less')")


def positive(kind: type, zero: bool = False) -> Callable[[str], int | float]:
    """argparse type: a number above zero (``zero``: or zero)."""
    bound = "at least 0" if zero else "above 0"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'' if zero else 'positive '}{kind.__name__}, got {text!r}") from None
        if not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}" if zero else f"positive {kind.__name__}"
    return parse


def check_dataset_root(parser: argparse.ArgumentParser, dataset: str, root: str | None) -> None:
    """A benchmark other than the generated synthetic one needs its annotation folder."""
    if root is None and dataset != "synthetic":
        parser.error(f"--dataset {dataset} needs --root: the folder holding its annotation files (and videos)")
    if root is not None and not os.path.isdir(root):
        parser.error(f"--root {root}: no such folder")


def missing_inputs(inputs: Sequence[str]) -> list[str]:
    """Local inputs that cannot exist: paths that are not there, globs whose fixed leading folder is
    not there. Object-store URIs are checked when listed."""
    missing = []
    for item in inputs:
        if "://" in item:
            continue
        fixed = item
        if any(char in item for char in "*?["):
            fixed = os.path.dirname(item[:min(item.find(char) for char in "*?[" if char in item)]) or "."
        if not os.path.exists(fixed):
            missing.append(item)
    return missing


def debugging(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """An exception as one line: OSErrors name their file, multi-line messages are joined."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def run(main: Callable[[Sequence[str] | None], T], argv: Sequence[str] | None = None) -> T:
    """Run a CLI's ``main(argv)`` as a program: quiet logging, and expected errors end it with one
    line on stderr and status 2 (a SystemExit; a stopped job: status 1). ``main`` itself raises,
    for callers in Python."""
    debug = debugging(argv)
    quiet_logging(debug)
    module = main.__module__
    prog = os.path.basename(sys.argv[0]) if module == "__main__" else f"{module.rsplit('.', 1)[-1]}.py"
    terminate = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    stop_on_sigterm()
    try:
        return main(argv)
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        if _received:  # or a stop signal reached the processes of the run first: say it was that
            _stopped_line(prog, _received[-1], "", argv)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except JobStopped as error:
        if debug:
            raise
        print(f"{prog}: stopped: {one_line(error)}", file=sys.stderr)
        raise SystemExit(STOPPED_STATUS) from None
    except EXPECTED as error:
        if debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(USAGE_STATUS) from None
    except KeyboardInterrupt as stop:
        if debug:
            raise
        _stopped_line(prog, getattr(stop, "signum", signal.SIGINT), getattr(stop, "done", ""), argv)
    finally:
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def _stopped_line(prog: str, signum: int, done: str, argv: Sequence[str] | None) -> NoReturn:
    by = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    line = f"{prog}: stopped by {by}" + (f": {done}" if done else "") + "\n"
    if argv is None:  # a program, not a caller in Python: nothing is left to finish
        # What was written is committed and the engine shut its Ray down. The interpreter's
        # own teardown is skipped: threads Ray leaves behind after an interrupt (Ray Data's
        # prefetcher) crashed it now and then as modules unloaded (SIGSEGV, after this line).
        # The line goes straight to the descriptor: whatever Python's stderr object went through.
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.write(2, line.encode("utf-8", "replace"))
        os._exit(128 + signum)
    print(line, end="", file=sys.stderr)
    raise SystemExit(128 + signum) from None


class Drop(logging.Filter):
    """A logging filter that drops records whose message holds one of ``texts``."""

    def __init__(self, *texts: str):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def quiet_logging(debug: bool = False) -> None:
    """Our progress at INFO; other libraries' INFO lines only with --debug (Ray's own console
    handlers are set by centerclip.index.progress.quiet_ray, where Ray is started)."""
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(message)s")
    logging.getLogger("centerclip").setLevel(logging.INFO)
