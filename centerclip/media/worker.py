"""A persistent child process that runs decoding calls with a hard timeout. Part of
``centerclip.media.decoding``, whose ``Decoder`` is a Worker with video methods.

Why a child process: a segfault or a hang inside FFmpeg cannot be caught in the process it
happens in, so decoding runs in a worker we can kill. Why a fork server: forking the caller is
unsafe (torch and Ray run threads whose locks a fork can copy mid-use), and spawning a fresh
interpreter re-imports torch and open_clip (~4 s) at every restart. The fork server is started
once, fresh, imports ``centerclip.media.decoding`` once, and runs no threads but idle library pools
(OpenBLAS, jemalloc) that register fork handlers; each worker is forked from it in milliseconds,
so a crash costs a quick restart, not a new interpreter. The worker is reused across videos.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import multiprocessing.connection
import signal
import sys
from collections.abc import Iterator
from typing import Any, Callable

from .sources import VideoDecodeError

_CONTEXT = multiprocessing.get_context("forkserver")
# Process-wide, and only honoured if the fork server is not running yet; without it each worker
# imports the module itself, slower to start but just as correct.
_CONTEXT.set_forkserver_preload(["centerclip.media.decoding"])


def _serve(connection: multiprocessing.connection.Connection) -> None:
    # Ctrl-C reaches every process of the terminal's group, this one too: the parent decides when
    # the worker stops (it closes the pipe or kills it), so a stop prints no traceback from here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            fn, args, kwargs = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe or exited
            return
        try:
            reply = (True, fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - every failure is the caller's to handle
            reply = (False, error)
        try:
            try:
                connection.send(reply)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as error:  # noqa: BLE001 - an unpicklable result or exception
                connection.send((False, RuntimeError(f"{type(error).__name__}: {error}")))
        except (BrokenPipeError, ConnectionResetError):  # the parent went away while we worked
            return


@contextlib.contextmanager
def _main_is_worker_main() -> Iterator[None]:
    """While a worker starts, tell multiprocessing that the caller's main module is worker_main.
    It re-imports the caller's ``__main__`` in every child (to unpickle functions defined there):
    a script without ``if __name__ == "__main__":`` would run again in the worker, and a script
    read from stdin cannot be read again. The worker only runs this package's functions, so it
    needs nothing of the caller's main module."""
    main = sys.modules["__main__"]
    missing = object()
    saved = main.__dict__.get("__spec__", missing)
    main.__spec__ = importlib.util.find_spec(f"{__package__}.worker_main")
    try:
        yield
    finally:
        if saved is missing:
            del main.__spec__
        else:
            main.__spec__ = saved


class Worker:
    """Runs calls in a persistent worker process, each under a hard timeout.

    A hang past ``timeout`` seconds or a crash of the worker raises VideoDecodeError ("timed out
    after 60s", "decoder crashed (signal 11)") and the next call starts a fresh worker.
    ``isolated=False`` runs calls in this process, for callers that are already isolated (a Ray
    task). One call at a time: use one Worker per thread, and close it (or use ``with``). Scripts
    need no ``if __name__ == "__main__":`` guard, and may come from stdin (``_main_is_worker_main``).
    """

    def __init__(self, *, isolated: bool = True, timeout: float = 60.0):
        self.isolated = isolated
        self.timeout = timeout
        self._process = None
        self._connection = None

    def call(self, path, fn: Callable, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` in the worker (``fn`` and its arguments must pickle); its
        exceptions are re-raised here, and a timeout or a crash raises VideoDecodeError for
        ``path``."""
        if not self.isolated:
            return fn(*args, **kwargs)
        if self._process is None or not self._process.is_alive():
            self._start()
        ok = value = None
        try:
            self._connection.send((fn, args, kwargs))
            ready = multiprocessing.connection.wait([self._connection, self._process.sentinel], self.timeout)
            if self._connection in ready:
                ok, value = self._connection.recv()
        except (EOFError, OSError):  # the worker died; its exit code says how
            ready = [self._process.sentinel]
        except BaseException:  # interrupted: the worker's late reply would answer the next call
            self._stop()
            raise
        if ok is not None:
            if ok:
                return value
            raise value
        exitcode = self._stop()
        if not ready:
            raise VideoDecodeError(str(path), f"timed out after {self.timeout:g}s")
        if exitcode < 0:
            raise VideoDecodeError(str(path), f"decoder crashed (signal {-exitcode})")
        raise VideoDecodeError(str(path), f"decoder exited with code {exitcode}")

    def _start(self) -> None:
        self._connection, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, args=(child,), name="centerclip-decoder", daemon=True)
        try:
            with _main_is_worker_main():
                self._process.start()
        except BaseException:  # no worker: nothing to stop later, and the caller sees why
            self._connection.close()
            self._process = self._connection = None
            raise
        finally:
            child.close()  # so that the worker's death reads as end-of-file here

    def _stop(self) -> int | None:
        """Kill the worker (idle, hung or dead: nothing in it is worth saving); its exit code."""
        if self._process is None:
            return None
        self._connection.close()
        if self._process.exitcode is None:
            self._process.kill()
        self._process.join()
        exitcode, self._process, self._connection = self._process.exitcode, None, None
        return exitcode

    def close(self) -> None:
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
