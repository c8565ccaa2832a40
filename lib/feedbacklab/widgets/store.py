"""The annotation store: every confirmed answer in one SQLite database, safe against crashes and concurrent writers.

An *answer* is what one annotator gave for one task item when they moved on (its records, or a skip). It is written
in one ``BEGIN IMMEDIATE`` transaction, in WAL mode with ``synchronous=FULL``: once ``confirm`` returns, the answer
survives a killed process, and a half-written answer is never visible. Several annotators (separate kernels or
processes) may write the same file at once; writers wait on each other through ``busy_timeout``. Records are kept as
the project's record JSON (``Record.to_dict``), so ``export_json`` writes what ``feedback.load_records`` reads.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from feedbacklab.feedback.records import Record, load_records, save_records

from .task import AnnotationTask, TaskItem, load_task

APPLICATION_ID = 0x46424C57  # "FBLW": marks a file as this app's database (PRAGMA application_id)
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, item_id TEXT NOT NULL, annotator_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'skipped', 'imported')),
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id INTEGER NOT NULL REFERENCES answers(id) ON DELETE CASCADE,
    task TEXT NOT NULL, kind TEXT NOT NULL, annotator_id TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS answers_by_annotator ON answers (task, annotator_id, id);
"""


class StoreError(ValueError):
    """A file is not this app's database, or an answer is malformed."""


def _check_is_store(path: Path) -> bool:
    """True for an existing store, False for a new/empty file; raise for anything else (without writing to it)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path} is not an annotation store (not an SQLite database); give a new path or a store "
                         "written by feedbacklab.widgets.AnnotationStore")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # read-only: never modifies a foreign file
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        n_tables = con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not an annotation store ({e})") from None
    finally:
        con.close()
    if app_id == APPLICATION_ID:
        return True
    if app_id == 0 and n_tables == 0:  # created but never initialised (e.g. killed at creation): initialise it
        return False
    raise StoreError(f"{path} is an SQLite database of another application (application_id {app_id:#x}, "
                     f"expected {APPLICATION_ID:#x}); it was not modified")


class AnnotationStore:
    """Open (or create) the store at ``path``; usable as a context manager."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0):
        self.path = Path(path)
        existed = _check_is_store(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        if not existed:  # idempotent, so two processes creating the same store at once both succeed
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('created_at', ?)",
                                 (str(SCHEMA_VERSION), str(time.time())))
        version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {version and version[0]}, this code reads {SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction: taken at once (BEGIN IMMEDIATE), committed on success, rolled back on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------------------
    def confirm(self, task_name: str, item_id: str, annotator_id: str, records: Sequence[Record]) -> int:
        """Store one answer (all its records) atomically; returns the answer id."""
        records = list(records)
        for r in records:
            if not isinstance(r, Record):
                raise StoreError(f"confirm takes feedback records, got {type(r).__name__}")
            if r.annotator_id != annotator_id:
                raise StoreError(f"record by {r.annotator_id!r} confirmed as annotator {annotator_id!r}")
        if not records:
            raise StoreError(f"item {item_id!r}: an answer needs at least one record (use skip() to skip)")
        return self._write(task_name, item_id, annotator_id, "confirmed", records)

    def skip(self, task_name: str, item_id: str, annotator_id: str) -> int:
        """Mark an item skipped by this annotator (it counts as done; undo_last brings it back)."""
        return self._write(task_name, item_id, annotator_id, "skipped", [])

    def _write(self, task: str, item_id: str, annotator_id: str, status: str, records: Sequence[Record]) -> int:
        with self._transaction():
            cur = self._db.execute("INSERT INTO answers (task, item_id, annotator_id, status, created_at) "
                                   "VALUES (?, ?, ?, ?, ?)", (task, str(item_id), annotator_id, status, time.time()))
            answer = int(cur.lastrowid)
            self._db.executemany("INSERT INTO records (answer_id, task, kind, annotator_id, json) VALUES (?, ?, ?, ?, ?)",
                                 [(answer, task, r.kind, annotator_id, json.dumps(r.to_dict(), sort_keys=True)) for r in records])
        return answer

    def undo_last(self, task_name: str, annotator_id: str) -> tuple[str, list[Record]] | None:
        """Delete this annotator's latest answer; returns (item_id, its records) so a form can show them again."""
        with self._transaction():
            row = self._db.execute("SELECT id, item_id FROM answers WHERE task = ? AND annotator_id = ? AND status != "
                                   "'imported' ORDER BY id DESC LIMIT 1", (task_name, annotator_id)).fetchone()
            if row is None:
                return None
            recs = [Record.from_dict(json.loads(j)) for (j,) in
                    self._db.execute("SELECT json FROM records WHERE answer_id = ? ORDER BY id", (row[0],))]
            self._db.execute("DELETE FROM records WHERE answer_id = ?", (row[0],))
            self._db.execute("DELETE FROM answers WHERE id = ?", (row[0],))
        return row[1], recs

    # -- reading ----------------------------------------------------------------------------------------------
    def done_items(self, task_name: str, annotator_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT item_id FROM answers WHERE task = ? AND annotator_id = ?",
                                                (task_name, annotator_id))}

    def next_item(self, task: AnnotationTask, annotator_id: str) -> TaskItem | None:
        """The first item in task order this annotator has not answered or skipped (resume point)."""
        done = self.done_items(task.name, annotator_id)
        return next((it for it in task.items if it.item_id not in done), None)

    def progress(self, task: AnnotationTask, annotator_id: str) -> tuple[int, int]:
        ids = {it.item_id for it in task.items}
        return len(self.done_items(task.name, annotator_id) & ids), len(ids)

    def answers(self, task_name: str | None = None) -> list[dict[str, Any]]:
        """Every answer as a dict (id, task, item_id, annotator_id, status, n_records), in order."""
        sql = ("SELECT a.id, a.task, a.item_id, a.annotator_id, a.status, COUNT(r.id) FROM answers a "
               "LEFT JOIN records r ON r.answer_id = a.id" + (" WHERE a.task = ?" if task_name else "") +
               " GROUP BY a.id ORDER BY a.id")
        keys = ("id", "task", "item_id", "annotator_id", "status", "n_records")
        return [dict(zip(keys, row)) for row in self._db.execute(sql, (task_name,) if task_name else ())]

    def records(self, task_name: str | None = None, kind: str | None = None,
                annotator_id: str | None = None) -> list[Record]:
        """The stored records (filtered), in the order they were confirmed."""
        where, args = [], []
        for col, val in (("task", task_name), ("kind", kind), ("annotator_id", annotator_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT json FROM records" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [Record.from_dict(json.loads(j)) for (j,) in self._db.execute(sql, args)]

    # -- exchange ---------------------------------------------------------------------------------------------
    def export_json(self, path: str | Path, task_name: str | None = None) -> Path:
        """JSON lines of the records, readable by ``feedback.load_records``."""
        return save_records(self.records(task_name), path)

    def import_json(self, path: str | Path, task_name: str) -> int:
        """Add records from a ``save_records`` file (each its own answer); a record already imported is skipped."""
        added = 0
        for r in load_records(path):
            text = json.dumps(r.to_dict(), sort_keys=True)
            with self._transaction():
                dup = self._db.execute("SELECT 1 FROM records r JOIN answers a ON a.id = r.answer_id WHERE "
                                       "a.status = 'imported' AND r.task = ? AND r.annotator_id = ? AND r.json = ?",
                                       (task_name, r.annotator_id, text)).fetchone()
                if dup:
                    continue
                item = getattr(r, "item_id", None) or r.item_ids[0]
                cur = self._db.execute("INSERT INTO answers (task, item_id, annotator_id, status, created_at) "
                                       "VALUES (?, ?, ?, 'imported', ?)", (task_name, item, r.annotator_id, time.time()))
                self._db.execute("INSERT INTO records (answer_id, task, kind, annotator_id, json) VALUES (?, ?, ?, ?, ?)",
                                 (cur.lastrowid, task_name, r.kind, r.annotator_id, text))
                added += 1
        return added


def load_human_feedback(task: AnnotationTask | str | Path, store_path: str | Path,
                        kind: str) -> tuple[list[Record], dict[str, np.ndarray]]:
    """The stored records of ``kind`` for ``task`` and the images they refer to (by image id): what a notebook
    trains on in place of the simulated panel's records."""
    task = task if isinstance(task, AnnotationTask) else load_task(task)
    if not Path(store_path).is_file():
        raise StoreError(f"no annotation store at {store_path}")
    with AnnotationStore(store_path) as store:
        records = store.records(task.name, kind=kind)
    return records, task.images_by_id()
