"""The annotation task and its SQLite store: round trips, resume/undo, bad input, SIGKILL safety, concurrent writers."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from feedbacklab.feedback import (BinaryLabel, CaptionCorrection, KeywordLabels, LikertScores, PointAnnotation, Ranking,
                                  load_records)
from feedbacklab.feedback.annotators import make_correction
from feedbacklab.widgets import (AnnotationStore, StoreError, TaskError, load_human_feedback, load_task, save_task,
                                 task_from_arrays)


def _img(v=0):
    return np.full((8, 8, 3), v, np.uint8)


def _every_kind(ann="ann"):
    return [BinaryLabel(ann, "i0", "a red circle", 1), LikertScores(ann, "i0", "a red circle", 1, 2, 3, 5),
            Ranking(ann, "a red circle", ("i0/0", "i0/1", "i0/2"), (2, 0, 1)),
            PointAnnotation(ann, "i0", "a red circle", "implausible", ((1.5, 2.0), (3, 4)), 2.0, 8, 8),
            KeywordLabels(ann, "i0", "a red circle", ("a", "red", "circle"), (0, 1, 0)),
            make_correction(ann, "i0", "a red square", "a red circle")]


def test_task_round_trip_and_images(tmp_path):
    imgs = [_img(10), _img(20)]
    task = task_from_arrays("t", ["binary", "keywords"], ["a red circle", "two blue squares"], imgs)
    path = save_task(task, tmp_path / "task.json")
    back = load_task(path)
    assert back.name == "t" and back.kinds == ("binary", "keywords") and [i.item_id for i in back.items] == ["item0000", "item0001"]
    assert all(np.array_equal(back.image(b), a) for b, a in zip(back.items, imgs))
    assert back.items[1].tokens == task.items[1].tokens and "squares" in back.items[1].tokens


@pytest.mark.parametrize("task_json, message", [
    ({"name": "t", "kinds": ["stars"], "items": [{"id": "a", "prompt": "p", "image": "x.png"}]}, "accepted: binary"),
    ({"name": "t", "kinds": ["binary"], "items": [{"id": "a", "prompt": "p", "image": "missing.png"}]}, "does not exist"),
    ({"name": "t", "kinds": ["ranking"], "items": [{"id": "a", "prompt": "p", "images": ["ok.png"]}]}, "at least two images"),
    ({"name": "t", "kinds": ["correction"], "items": [{"id": "a", "prompt": "p", "image": "ok.png"}]}, "caption"),
    ({"name": "t", "kinds": ["binary"], "items": [{"id": "a", "image": "ok.png"}]}, "missing key 'prompt'"),
    ({"name": "t", "kinds": ["binary"], "items": []}, "no items"),
    ({"name": "t", "kinds": ["binary"], "items": [{"id": "a", "prompt": "p", "image": "ok.png"}] * 2}, "duplicate item id"),
])
def test_bad_tasks_fail_with_a_clear_message(tmp_path, task_json, message):
    from PIL import Image

    Image.fromarray(_img()).save(tmp_path / "ok.png")
    (tmp_path / "task.json").write_text(json.dumps(task_json))
    with pytest.raises(TaskError, match=message):
        load_task(tmp_path / "task.json")


def test_confirm_skip_resume_and_undo(tmp_path):
    task = task_from_arrays("t", ["binary"], ["p0", "p1", "p2"], [_img()] * 3)
    with AnnotationStore(tmp_path / "s.db") as s:
        s.confirm("t", "item0000", "ann", [BinaryLabel("ann", "item0000", "p0", 1)])
        s.skip("t", "item0001", "ann")
        assert s.progress(task, "ann") == (2, 3) and s.next_item(task, "ann").item_id == "item0002"
        assert s.next_item(task, "other").item_id == "item0000"  # each annotator resumes on their own
        assert s.undo_last("t", "ann") == ("item0001", [])
        assert s.next_item(task, "ann").item_id == "item0001"
        assert s.undo_last("t", "ann") == ("item0000", [BinaryLabel("ann", "item0000", "p0", 1)])
        assert s.records() == [] and s.undo_last("t", "ann") is None
    with pytest.raises(StoreError, match="annotator"):
        AnnotationStore(tmp_path / "s.db").confirm("t", "item0000", "bob", [BinaryLabel("ann", "item0000", "p0", 1)])


def test_every_record_kind_round_trips_and_exports(tmp_path):
    recs = _every_kind()
    with AnnotationStore(tmp_path / "s.db") as s:
        s.confirm("t", "i0", "ann", recs)
        assert s.records() == recs and s.records(kind="ranking") == [recs[2]]
        out = s.export_json(tmp_path / "out.jsonl")
    assert load_records(out) == recs
    with AnnotationStore(tmp_path / "other.db") as s2:
        assert s2.import_json(out, "t") == len(recs)
        assert s2.import_json(out, "t") == 0  # importing twice adds nothing
        assert s2.records("t") == recs
    assert isinstance(recs[-1], CaptionCorrection) and recs[-1].changed


def test_not_a_store_is_refused_and_left_unchanged(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    for path in (text, other):
        before = path.read_bytes()
        with pytest.raises(StoreError, match="not an annotation store|another application"):
            AnnotationStore(path)
        assert path.read_bytes() == before


def test_load_human_feedback(tmp_path):
    task = task_from_arrays("t", ["binary"], ["p0", "p1"], [_img(1), _img(2)])
    save_task(task, tmp_path / "task.json")
    with AnnotationStore(tmp_path / "s.db") as s:
        s.confirm("t", "item0001", "ann", [BinaryLabel("ann", "item0001", "p1", 0)])
    recs, images = load_human_feedback(tmp_path / "task.json", tmp_path / "s.db", "binary")
    assert recs == [BinaryLabel("ann", "item0001", "p1", 0)] and np.array_equal(images["item0001"], _img(2))


WRITER = textwrap.dedent("""
    import sys
    from feedbacklab.feedback import BinaryLabel, LikertScores, KeywordLabels
    from feedbacklab.widgets import AnnotationStore, task_from_arrays
    import numpy as np
    path, ann, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    task = task_from_arrays("t", ["binary"], [f"p{i}" for i in range(n)], [np.zeros((4, 4, 3), np.uint8)] * n)
    store = AnnotationStore(path)
    while (item := store.next_item(task, ann)) is not None:
        i = item.item_id
        answer = store.confirm("t", i, ann, [BinaryLabel(ann, i, item.prompt, 1), LikertScores(ann, i, item.prompt, 1, 2, 3, 4),
                                             KeywordLabels(ann, i, item.prompt, ("p",), (1,))])
        print(answer, i, flush=True)
""")


def _writer(tmp_path, ann, n):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "s.db"), ann, str(n)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_sigkill_loses_no_confirmed_answer_and_leaves_no_partial_one(tmp_path):
    rng = random.Random(0)
    confirmed: list[str] = []
    for _ in range(4):
        proc = _writer(tmp_path, "ann", 10_000)
        first = proc.stdout.readline()  # it has started writing (imports take a while)
        time.sleep(rng.uniform(0.1, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out = first + out
        confirmed += [line.split()[1] for line in out.splitlines() if len(line.split()) == 2]
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with AnnotationStore(tmp_path / "s.db") as s:
        answers = s.answers("t")
        assert {a["item_id"] for a in answers} >= set(confirmed) and len(confirmed) > 0
        assert all(a["n_records"] == 3 for a in answers)  # no answer with a partial set of records
        assert len({a["item_id"] for a in answers}) == len(answers)  # the reruns resumed, never repeated an item


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    AnnotationStore(tmp_path / "s.db").close()
    procs = [_writer(tmp_path, ann, 40) for ann in ("alice", "bob")]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    with AnnotationStore(tmp_path / "s.db") as s:
        for ann in ("alice", "bob"):
            assert len(s.records(kind="binary", annotator_id=ann)) == 40
        assert len(s.answers()) == 80
