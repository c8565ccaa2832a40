"""The annotation app driven headless: every feedback kind gives the records the form shows; resume, skip, undo."""
import numpy as np
import pytest

from feedbacklab.feedback import BinaryLabel, KeywordLabels, LikertScores, PointAnnotation, Ranking
from feedbacklab.widgets import AnnotationStore, StoreError, task_from_arrays
from feedbacklab.widgets.app import AnnotationApp


def _img(v=0):
    return np.full((16, 16, 3), v, np.uint8)


def test_binary_likert_points_keywords_in_one_answer(tmp_path):
    task = task_from_arrays("t", ["binary", "likert", "points", "keywords"], ["a red circle", "two blue squares"],
                            [_img(1), _img(2)])
    app = AnnotationApp(task, tmp_path / "s.db", "ann")
    assert app.item.item_id == "item0000" and "0 / 2" in app.progress.value
    app.confirm_button.click()  # nothing chosen: an error, nothing written
    assert "good or bad" in app.status.value and app.store.records() == []
    app.binary.value = 1
    for k, w in enumerate(app.likert.values()):
        w.value = k + 2
    app.on_image_event({"type": "click", "dataX": 20, "dataY": 8})  # displayed 4x: pixel (5, 2)
    app.region.value = "misaligned"
    app.add_point(7, 9)
    app.add_point(1, 1)
    app.undo_point_button.click()
    before = app.image.value
    app.keyword_buttons[app.item.tokens.index("red")].value = True
    app.confirm_button.click()
    assert app.item.item_id == "item0001" and "1 / 2" in app.progress.value and before != app.image.value
    recs = AnnotationStore(tmp_path / "s.db").records()
    assert recs[0] == BinaryLabel("ann", "item0000", "a red circle", 1)
    assert recs[1] == LikertScores("ann", "item0000", "a red circle", 2, 3, 4, 5)
    pts = {r.region: r for r in recs if isinstance(r, PointAnnotation)}
    assert pts["implausible"].points == ((5.0, 2.0),) and pts["misaligned"].points == ((7.0, 9.0),)
    assert pts["implausible"].radius == pytest.approx(0.08 * 16) and pts["implausible"].height == 16
    kw = [r for r in recs if isinstance(r, KeywordLabels)][0]
    assert dict(zip(kw.tokens, kw.labels))["red"] == 1 and sum(kw.labels) == 1


def test_ranking_and_resume_skip_undo(tmp_path):
    task = task_from_arrays("r", ["ranking"], ["p0", "p1"], [[_img(1), _img(2), _img(3)], [_img(4), _img(5)]])
    app = AnnotationApp(task, tmp_path / "s.db", "ann")
    for d, rank in zip(app.ranks, (2, 3, 1)):
        d.value = rank
    app.confirm_button.click()
    app.close()
    again = AnnotationApp(task, tmp_path / "s.db", "ann")  # a new session resumes after the confirmed item
    assert again.item.item_id == "item0001"
    again.skip_button.click()
    assert again.item is None and "All 2 items are done" in again.prompt.value
    again.undo_button.click()
    assert again.item.item_id == "item0001"
    again.undo_button.click()  # back to the ranking, its answer in the form again
    assert again.item.item_id == "item0000" and [d.value for d in again.ranks] == [2, 3, 1]
    again.confirm_button.click()
    (rec,) = again.store.records()
    assert rec == Ranking("ann", "p0", ("item0000/0", "item0000/1", "item0000/2"), (2, 0, 1)) and rec.ranks == (2, 3, 1)
    for d, rank in zip(again.ranks, (1, 1)):
        d.value = rank
    again.confirm_button.click()
    assert "different rank" in again.status.value


def test_correction_gives_the_segment_diff(tmp_path):
    task = task_from_arrays("c", ["correction"], ["describe"], [_img()], captions=["a red square on a gray background"])
    app = AnnotationApp(task, tmp_path / "s.db", "ann")
    assert app.caption.value == "a red square on a gray background"
    app.caption.value = "a red circle on a gray background"
    app.confirm_button.click()
    (rec,) = app.store.records()
    assert rec.original_spans == ((2, 3),) and rec.corrected_spans == ((2, 3),)
    assert rec.corrected[slice(*rec.corrected_char_spans[0])] == "circle"


def test_bad_input_before_the_app_opens(tmp_path):
    (tmp_path / "x.db").write_text("my notes")
    task = task_from_arrays("t", ["binary"], ["p"], [_img()])
    with pytest.raises(StoreError, match="not an annotation store"):
        AnnotationApp(task, tmp_path / "x.db", "ann")
    with pytest.raises(ValueError, match="annotator_id"):
        AnnotationApp(task, tmp_path / "s.db", "")
