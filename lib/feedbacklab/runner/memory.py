"""Peak memory of a notebook run: the largest resident set of this process's children (the papermill kernel and
what it starts), sampled by a background thread while the job runs. Processes that were already running when the
measurement began (a browser or a Ray instance another part of the program started) are not the job's and are left
out. The index shows it next to the duration, so
a profile's run prints the memory each notebook needs (issue 16's "peak memory per notebook")."""
from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb``: the highest summed RSS of the descendant processes started
    inside the block, seen every ``interval_s`` seconds (0 if none ran). Short spikes between two samples can be
    missed."""

    def __init__(self, interval_s: float = 0.2):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s, self.peak_bytes = interval_s, 0
        self._before: set[tuple[int, float]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @property
    def mb(self) -> float:
        return self.peak_bytes / 2**20

    @staticmethod
    def _descendants() -> list[tuple[psutil.Process, tuple[int, float]]]:
        out = []
        for child in psutil.Process().children(recursive=True):
            try:
                out.append((child, (child.pid, child.create_time())))  # (pid, start time): pids are reused
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return out

    def sample(self) -> int:
        """Summed RSS (bytes) of this process's descendants now, less those running before the block began."""
        total = 0
        for child, key in self._descendants():
            if key in self._before:
                continue
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    def _watch(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self.sample())
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakMemory":
        self._before = {key for _, key in self._descendants()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
