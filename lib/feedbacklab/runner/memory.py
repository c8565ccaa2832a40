"""Peak memory of a notebook run: the largest resident set of this process's children (the papermill kernel and
what it starts), sampled by a background thread while the job runs. The index shows it next to the duration, so
a profile's run prints the memory each notebook needs (issue 16's "peak memory per notebook")."""
from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb``: the highest summed RSS of all descendant processes
    seen every ``interval_s`` seconds (0 if none ran). Short spikes between two samples can be missed."""

    def __init__(self, interval_s: float = 0.2):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s, self.peak_bytes = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @property
    def mb(self) -> float:
        return self.peak_bytes / 2**20

    def sample(self) -> int:
        """Summed RSS (bytes) of this process's descendants now."""
        total = 0
        for child in psutil.Process().children(recursive=True):
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
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
