"""What a listing of millions of inputs has already seen, in a few bytes per input.

A Python set of 10M uris holds about 1 GB; the listing only ever asks "seen before?" (and, of a
duplicate, where the first one came from). So each member is a 64-bit digest with a 64-bit value,
kept in sorted numpy arrays of doubling sizes (a log-structured merge: each member is moved
O(log n) times), plus a small dict of the latest additions. Two different names share a digest
with a chance of about n^2 / 2^65 (3e-6 at 10M names).
"""

from __future__ import annotations

import hashlib

import numpy as np

NO_VALUE = -1
_NONE = np.zeros(0, np.int64)  # the values of a level of a FirstSeen without values


def digest(name: str | bytes) -> int:
    data = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class FirstSeen:
    """Digests seen so far, each with the value it was first added with (``values=False``: a set,
    8 bytes a member)."""

    def __init__(self, recent: int = 1 << 16, values: bool = True):
        self.recent_limit = recent
        self.values = values
        self.recent: dict[int, int] = {}
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted digests, their values), largest first
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def get(self, key: int) -> int | None:
        """The value ``key`` was first added with, or None when it was never added."""
        if key in self.recent:
            return self.recent[key]
        probe = np.uint64(key)
        for keys, values in self.levels:
            at = int(np.searchsorted(keys, probe))
            if at < len(keys) and keys[at] == probe:
                return int(values[at]) if self.values else NO_VALUE
        return None

    def add(self, key: int, value: int = NO_VALUE) -> bool:
        """Add ``key`` unless it is there; returns whether it was new."""
        if key in self:
            return False
        self.recent[key] = value
        self.count += 1
        if len(self.recent) >= self.recent_limit:
            self._flush()
        return True

    def _flush(self) -> None:
        keys = np.fromiter(self.recent.keys(), np.uint64, len(self.recent))
        values = np.fromiter(self.recent.values(), np.int64, len(self.recent)) if self.values else _NONE
        self.recent = {}
        order = np.argsort(keys, kind="stable")
        self.levels.append((keys[order], values[order] if self.values else _NONE))
        while len(self.levels) >= 2 and len(self.levels[-2][0]) <= 2 * len(self.levels[-1][0]):
            (upper_keys, upper_values), (lower_keys, lower_values) = self.levels.pop(), self.levels.pop()
            keys = np.concatenate([lower_keys, upper_keys])
            order = np.argsort(keys, kind="stable")
            values = np.concatenate([lower_values, upper_values])[order] if self.values else _NONE
            self.levels.append((keys[order], values))
