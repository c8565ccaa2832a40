"""The annotation app: a person gives the papers' feedback kinds for each task item, one item at a time.

``AnnotationApp(task, store_path, annotator_id)`` shows the first item this annotator has not done (resume), one
form per feedback kind of the task, progress, and Confirm / Skip / Undo. Confirm builds the project's records from
the form, checks them (an unanswered question is reported, nothing is written) and writes them to the store in one
transaction before the next item is shown. Clicks on the image (ipyevents) add points; the form state lives in
plain attributes, so tests drive the app headless with ``.value`` and ``.click()``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from feedbacklab.feedback.annotators import NoiseConfig, make_correction
from feedbacklab.feedback.records import (POINT_KINDS, SCORE_ASPECTS, BinaryLabel, KeywordLabels, LikertScores,
                                          PointAnnotation, Ranking, Record)

from . import render
from .store import AnnotationStore
from .task import AnnotationTask, TaskItem, load_task

POINT_COLORS = {"implausible": (255, 230, 0), "misaligned": (0, 230, 255)}  # yellow / cyan: visible on the world's colours


class AnnotationApp:
    """The annotation widget over ``task`` writing to the store at ``store_path`` as ``annotator_id``."""

    def __init__(self, task: AnnotationTask | str | Path, store_path: str | Path, annotator_id: str, scale: int = 4):
        self.task = task if isinstance(task, AnnotationTask) else load_task(task)
        if not annotator_id or not isinstance(annotator_id, str):
            raise ValueError(f"annotator_id must be a non-empty string, got {annotator_id!r}")
        self.store = AnnotationStore(store_path)  # refuses a file that is not a store, before any widget is built
        self.annotator_id, self.scale = annotator_id, int(scale)
        self.item: TaskItem | None = None
        self.points: list[tuple[str, float, float]] = []  # (region, x, y) in image pixels, in click order
        self.progress = W.HTML()
        self.prompt = W.HTML()
        self.status = W.HTML()
        self.image = W.Image(format="png")
        self.ranking_images = W.HBox()
        self.confirm_button = W.Button(description="Confirm & next", button_style="success")
        self.skip_button = W.Button(description="Skip")
        self.undo_button = W.Button(description="Undo last")
        self.confirm_button.on_click(lambda _: self.confirm())
        self.skip_button.on_click(lambda _: self.skip())
        self.undo_button.on_click(lambda _: self.undo())
        kinds = self.task.kinds
        self.binary = W.ToggleButtons(options=[("good: matches the prompt", 1), ("bad", 0)], value=None,
                                      description="label") if "binary" in kinds else None
        self.likert = {a: W.ToggleButtons(options=[1, 2, 3, 4, 5], value=None, description=a,
                                          style={"button_width": "32px"}) for a in SCORE_ASPECTS} if "likert" in kinds else {}
        self.ranks: list[W.Dropdown] = []
        self.region = W.ToggleButtons(options=list(POINT_KINDS), value=POINT_KINDS[0], description="points on")
        self.undo_point_button = W.Button(description="Undo point")
        self.undo_point_button.on_click(lambda _: self.undo_point())
        self.keyword_buttons: list[W.ToggleButton] = []
        self.keywords_box = W.HBox()
        self.caption = W.Textarea(description="caption", layout=W.Layout(width="90%"))
        self._events = None
        if "points" in kinds:
            try:
                from ipyevents import Event

                self._events = Event(source=self.image, watched_events=["click"])
                self._events.on_dom_event(self.on_image_event)
            except ImportError:  # headless use without ipyevents: add_point still works
                self._events = None
        self.widget = W.VBox(self._layout())
        self.show_next()

    # -- layout -----------------------------------------------------------------------------------------------
    def _layout(self) -> list[W.Widget]:
        kinds = self.task.kinds
        rows: list[W.Widget] = [self.progress, self.prompt, self.ranking_images if "ranking" in kinds else self.image]
        if self.binary is not None:
            rows.append(self.binary)
        rows += list(self.likert.values())
        if "points" in kinds:
            rows.append(W.HBox([self.region, self.undo_point_button]))
        if "keywords" in kinds:
            rows += [W.HTML("misaligned keywords (toggle):"), self.keywords_box]
        if "correction" in kinds:
            rows.append(self.caption)
        rows += [W.HBox([self.confirm_button, self.skip_button, self.undo_button]), self.status]
        return rows

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- showing an item --------------------------------------------------------------------------------------
    def show_next(self) -> None:
        self.show(self.store.next_item(self.task, self.annotator_id))

    def show(self, item: TaskItem | None, records: list[Record] | None = None) -> None:
        """Put ``item`` in the form (filled from ``records`` after an undo); None: the task is finished."""
        done, total = self.store.progress(self.task, self.annotator_id)
        self.progress.value = f"<b>{self.task.name}</b>: {done} / {total} done"
        self.item = item
        for b in (self.confirm_button, self.skip_button):
            b.disabled = item is None
        if item is None:
            self.prompt.value = f"<b>All {total} items are done.</b> Thank you."
            return
        self.prompt.value = f"<b>prompt:</b> {item.prompt}"
        self.points = []
        if self.binary is not None:
            self.binary.value = None
        for w in self.likert.values():
            w.value = None
        if "ranking" in self.task.kinds:
            k = len(item.images)
            self.ranks = [W.Dropdown(options=[("rank?", None)] + [(str(r), r) for r in range(1, k + 1)], value=None,
                                     layout=W.Layout(width="90px")) for _ in range(k)]
            self.ranking_images.children = [
                W.VBox([W.Image(value=render.png(self.task.image(item, j), self.scale), format="png"), self.ranks[j]])
                for j in range(k)]
        self.keyword_buttons = [W.ToggleButton(description=t, value=False, layout=W.Layout(width="auto")) for t in item.tokens]
        self.keywords_box.children = self.keyword_buttons
        self.caption.value = item.caption or ""
        for r in records or []:
            self._fill(r)
        self._draw()

    def _fill(self, r: Record) -> None:
        if isinstance(r, BinaryLabel) and self.binary is not None:
            self.binary.value = r.label
        elif isinstance(r, LikertScores):
            for a in SCORE_ASPECTS:
                self.likert[a].value = r.score(a)
        elif isinstance(r, Ranking):
            for j, rank in enumerate(r.ranks):
                self.ranks[j].value = rank
        elif isinstance(r, PointAnnotation):
            self.points += [(r.region, x, y) for x, y in r.points]
        elif isinstance(r, KeywordLabels):
            for b, v in zip(self.keyword_buttons, r.labels):
                b.value = bool(v)
        elif r.kind == "correction":
            self.caption.value = r.corrected

    def _radius(self, image: np.ndarray) -> float:
        """The task's radius in pixels, or the simulated annotators' (a fraction of the image side)."""
        if self.task.point_radius is not None:
            return self.task.point_radius
        return NoiseConfig().point_radius * max(image.shape[:2])

    def _draw(self) -> None:
        if self.item is None or "ranking" in self.task.kinds:
            return
        img = self.task.image(self.item)
        for region in POINT_KINDS:
            pts = [(x, y) for r, x, y in self.points if r == region]
            if pts:
                img = render.draw_points(img, pts, max(1.0, self._radius(img) / 3), POINT_COLORS[region])
        self.image.value = render.png(img, self.scale)
        self.image.layout.width = f"{img.shape[1] * self.scale}px"  # shown at scale, never stretched

    # -- points -----------------------------------------------------------------------------------------------
    def add_point(self, x: float, y: float) -> None:
        """A point at image pixel (x, y) = (column, row) on the region chosen in ``self.region``."""
        if self.item is None:
            return
        h, w = self.task.image(self.item).shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            self.status.value = f"<span style='color:#b00'>point ({x:.0f}, {y:.0f}) is outside the {w}x{h} image</span>"
            return
        self.points.append((self.region.value, float(x), float(y)))
        self._draw()

    def on_image_event(self, event: dict[str, Any]) -> None:
        """ipyevents click: dataX/dataY are pixels of the displayed (enlarged) PNG."""
        if event.get("type") == "click" and "dataX" in event:
            self.add_point(event["dataX"] / self.scale, event["dataY"] / self.scale)

    def undo_point(self) -> None:
        if self.points:
            self.points.pop()
            self._draw()

    # -- records ----------------------------------------------------------------------------------------------
    def records(self) -> list[Record]:
        """The records the form holds now; ValueError naming what is unanswered."""
        item, ann, kinds = self.item, self.annotator_id, self.task.kinds
        if item is None:
            raise ValueError("the task is finished: there is no item to answer")
        out: list[Record] = []
        if "binary" in kinds:
            if self.binary.value is None:
                raise ValueError("choose good or bad")
            out.append(BinaryLabel(ann, item.item_id, item.prompt, self.binary.value))
        if "likert" in kinds:
            missing = [a for a, w in self.likert.items() if w.value is None]
            if missing:
                raise ValueError(f"give a 1-5 score for {', '.join(missing)}")
            out.append(LikertScores(ann, item.item_id, item.prompt, *(self.likert[a].value for a in SCORE_ASPECTS)))
        if "ranking" in kinds:
            ranks = [d.value for d in self.ranks]
            if None in ranks or sorted(ranks) != list(range(1, len(ranks) + 1)):
                raise ValueError(f"give each of the {len(ranks)} images a different rank 1..{len(ranks)}, got {ranks}")
            out.append(Ranking(ann, item.prompt, item.image_ids, tuple(int(np.argsort(ranks)[p]) for p in range(len(ranks)))))
        if "points" in kinds:
            h, w = self.task.image(item).shape[:2]
            for region in POINT_KINDS:
                out.append(PointAnnotation(ann, item.item_id, item.prompt, region,
                                           tuple((x, y) for r, x, y in self.points if r == region),
                                           self._radius(self.task.image(item)), h, w))
        if "keywords" in kinds:
            out.append(KeywordLabels(ann, item.item_id, item.prompt, item.tokens,
                                     tuple(int(b.value) for b in self.keyword_buttons)))
        if "correction" in kinds:
            text = " ".join(self.caption.value.split())
            if not text:
                raise ValueError("the corrected caption is empty")
            out.append(make_correction(ann, item.item_id, item.caption, text))
        return out

    # -- actions ----------------------------------------------------------------------------------------------
    def confirm(self) -> int | None:
        """Write the current answer (one transaction) and show the next item; returns the answer id."""
        try:
            records = self.records()
        except ValueError as e:
            self.status.value = f"<span style='color:#b00'>{e}</span>"
            return None
        answer = self.store.confirm(self.task.name, self.item.item_id, self.annotator_id, records)
        self.status.value = f"saved {self.item.item_id}"
        self.show_next()
        return answer

    def skip(self) -> None:
        if self.item is not None:
            self.store.skip(self.task.name, self.item.item_id, self.annotator_id)
            self.status.value = f"skipped {self.item.item_id}"
            self.show_next()

    def undo(self) -> None:
        """Take back the last confirmed or skipped item and show it again with its answers."""
        last = self.store.undo_last(self.task.name, self.annotator_id)
        if last is None:
            self.status.value = "nothing to undo"
            return
        item_id, records = last
        self.status.value = f"undid {item_id}"
        self.show(self.task.item(item_id), records)

    def close(self) -> None:
        self.store.close()
        self.widget.close()
