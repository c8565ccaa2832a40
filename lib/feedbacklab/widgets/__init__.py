"""Interactive widgets (ipywidgets): the heatmap inspector, the best-of-n browser, and the annotation task and its
crash-safe SQLite store. Every widget takes plain library objects (records, images, score arrays), never notebook
globals, and its logic runs headless (set values, ``.click()``), which is how the tests drive it.

``from feedbacklab.widgets import HeatmapInspector`` loads ipywidgets and matplotlib; the store, the task and the
bundles do not.
"""
from .bundles import (BestOfNBundle, BundleError, RichBundle, demo_bundles, load_best_of_n_bundle, load_rich_bundle,
                      save_best_of_n_bundle, save_rich_bundle)
from .store import AnnotationStore, StoreError, load_human_feedback
from .task import FEEDBACK_KINDS, AnnotationTask, TaskError, TaskItem, load_task, save_task, task_from_arrays

_LAZY = {"HeatmapInspector", "BestOfNBrowser", "StaticFigure"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import inspect

        return getattr(inspect, name)
    raise AttributeError(name)


__all__ = ["AnnotationStore", "AnnotationTask", "BestOfNBrowser", "BestOfNBundle", "BundleError", "FEEDBACK_KINDS",
           "HeatmapInspector", "RichBundle", "StaticFigure", "StoreError", "TaskError", "TaskItem", "demo_bundles",
           "load_best_of_n_bundle", "load_human_feedback", "load_rich_bundle", "load_task", "save_best_of_n_bundle",
           "save_rich_bundle", "save_task", "task_from_arrays"]
