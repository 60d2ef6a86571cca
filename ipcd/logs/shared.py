"""Counters the log process writes and the control process reads, in shared memory.

One anonymous shared mapping made before the fork: a slot of 64 bits per
counter (an aligned 8-byte store is atomic on the machines ipcd runs on),
and one text slot for the store's last error, guarded by a sequence number
(odd while it is being written), so that `status` never waits on the log
process and never reads half a message.
"""

from __future__ import annotations

import bisect
import mmap
import struct
import time

COUNTERS: tuple[str, ...] = (
    "received",  # every datagram read, rate-limited ones included
    "stored",  # rows committed since start
    "rate_limited",
    "truncated",
    "malformed",
    "dropped",  # refused while the store could not be written, or unstorable
    "pending",  # read, not committed yet
    "entries",  # rows in the store
    "commits",
    "deleted",  # removed by retention since start
    "last_id",  # the last id committed
    "heartbeat_ns",  # CLOCK_MONOTONIC of the log loop's last turn
    "writer_state",  # 0 ok, 1 failing (retrying), 2 dead
    "failures",
    "oldest_us",  # the time the oldest entry was received, in microseconds (0: the store is empty)
    "senders",  # rate-limit windows kept now
    "senders_shared",  # senders put in their uid's window since start: the windows were at max_senders
)
# Histograms (metrics): a slot per bucket (not cumulative), the last one +Inf, and the sum in ns.
HISTOGRAMS = (
    "intake_latency",  # per commit: how long its oldest entry waited, from read to committed
    "commit_duration",  # per commit: inserting what was not inserted yet, and COMMIT
)
HISTOGRAM_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTERS += tuple(
    f"{h}_{i}" for h in HISTOGRAMS for i in [*(str(n) for n in range(len(HISTOGRAM_BOUNDS_S) + 1)), "sum_ns"]
)
TEXT_BYTES = 1024
_INDEX = {name: i for i, name in enumerate(COUNTERS)}
_TEXT_AT = 8 * len(COUNTERS)
_SIZE = _TEXT_AT + 16 + TEXT_BYTES
WRITER_OK, WRITER_FAILING, WRITER_DEAD = 0, 1, 2


class Shared:
    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, _SIZE, flags=mmap.MAP_SHARED)
        self._slots = memoryview(self._mm)[:_TEXT_AT].cast("q")

    def set(self, name: str, value: int) -> None:
        self._slots[_INDEX[name]] = value

    def get(self, name: str) -> int:
        return int(self._slots[_INDEX[name]])

    def update(self, values: dict[str, int]) -> None:
        slots = self._slots
        for name, value in values.items():
            slots[_INDEX[name]] = value

    def observe(self, histogram: str, seconds: float) -> None:
        """One observation (the log process is the only writer: no lock)."""
        slots, at = self._slots, _INDEX[f"{histogram}_0"]
        slots[at + bisect.bisect_left(HISTOGRAM_BOUNDS_S, seconds)] += 1  # le: bound >= value
        slots[at + len(HISTOGRAM_BOUNDS_S) + 1] += int(seconds * 1e9)

    def histogram(self, histogram: str) -> tuple[list[tuple[float, int]], float]:
        """Cumulative buckets (upper bound, count; the last one inf) and the sum in seconds."""
        at = _INDEX[f"{histogram}_0"]
        n = len(HISTOGRAM_BOUNDS_S) + 1
        counts = self._slots[at : at + n + 1].tolist()
        out, total = [], 0
        for bound, count in zip([*HISTOGRAM_BOUNDS_S, float("inf")], counts[:n], strict=True):
            total += count
            out.append((bound, total))
        return out, counts[n] / 1e9

    def snapshot(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self._slots.tolist(), strict=True))

    def beat(self) -> None:
        self._slots[_INDEX["heartbeat_ns"]] = time.monotonic_ns()

    def age_s(self) -> float:
        """Seconds since the log loop last turned."""
        return (time.monotonic_ns() - self.get("heartbeat_ns")) / 1e9

    def set_text(self, text: str | None) -> None:
        data = (text or "").encode("utf-8", "replace")[:TEXT_BYTES]
        seq = struct.unpack_from("q", self._mm, _TEXT_AT)[0]
        struct.pack_into("q", self._mm, _TEXT_AT, seq + 1)  # odd: being written
        struct.pack_into(f"q{TEXT_BYTES}s", self._mm, _TEXT_AT + 8, len(data), data)
        struct.pack_into("q", self._mm, _TEXT_AT, seq + 2)

    def text(self) -> str | None:
        for _ in range(100):
            seq = struct.unpack_from("q", self._mm, _TEXT_AT)[0]
            n, data = struct.unpack_from(f"q{TEXT_BYTES}s", self._mm, _TEXT_AT + 8)
            if seq % 2 == 0 and struct.unpack_from("q", self._mm, _TEXT_AT)[0] == seq:
                return data[:n].decode("utf-8", "replace") or None
        return None
