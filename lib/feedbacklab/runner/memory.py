"""Peak memory of a notebook run: the largest resident set of this process's children (the papermill kernel and
what it starts), sampled by a background thread while the job runs. Processes that were already running when the
measurement began (a browser or a Ray instance another part of the program started) are not the job's and are left
out. The index shows it next to the duration, so
a profile's run prints the memory each notebook needs (issue 16's "peak memory per notebook")."""
from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb``: the highest summed RSS of the processes started inside the
    block and their descendants, seen every ``interval_s`` seconds (0 if none ran). Short spikes between two samples can be
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
    def _key(process: psutil.Process) -> tuple[int, float] | None:
        try:
            return process.pid, process.create_time()  # (pid, start time): pids are reused
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def _job_processes(self) -> list[psutil.Process]:
        """This process's direct children started inside the block, with all their descendants. The subtrees of
        children that were already running (a Ray instance whose raylet starts workers later, a browser) are not
        the job's, even for processes they start during the block."""
        out = []
        for child in psutil.Process().children(recursive=False):
            key = self._key(child)
            if key is None or key in self._before:
                continue
            out.append(child)
            try:
                out.extend(child.children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return out

    def sample(self) -> int:
        """Summed RSS (bytes) of the processes the block started (and theirs) now."""
        total = 0
        for process in self._job_processes():
            try:
                total += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    def _watch(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self.sample())
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakMemory":
        self._before = {key for child in psutil.Process().children(recursive=False) if (key := self._key(child))}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
