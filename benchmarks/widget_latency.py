"""Milliseconds per widget interaction (median and max over --repeats), on 64 px ShapesWorld renders, headless.

Usage: OMP_NUM_THREADS=1 python benchmarks/widget_latency.py [--repeats 30] [--prompts 6] [--images-per-prompt 32]

The images are ``widgets.bundles.demo_bundles`` (renders, half corrupted, judged by the oracle, annotated by a
simulated panel). The heatmap inspector gets stand-in predictions (the consolidated maps shifted, scores with noise):
drawing time does not depend on their values. Each interaction is timed from the control's change (``.value = ...``
or ``.click()``) until the widget's outputs are updated, after one untimed warm-up; the budget is 200 ms.

To add a widget, append ``Entry(name, setup, interaction)`` rows to ``ENTRIES``: ``setup(data)`` returns the widget
(built once per row, untimed); ``interaction(widget, k)`` performs the k-th interaction, which must change the view.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from feedbacklab.feedback import MAP_KINDS, SCORE_ASPECTS  # noqa: E402
from feedbacklab.widgets.app import AnnotationApp  # noqa: E402
from feedbacklab.widgets.bundles import demo_bundles  # noqa: E402
from feedbacklab.widgets.inspect import BestOfNBrowser, HeatmapInspector  # noqa: E402
from feedbacklab.widgets.task import task_from_arrays  # noqa: E402

BUDGET_MS = 200.0


@dataclass(frozen=True)
class Entry:
    name: str                                  # "widget: interaction"
    setup: Callable[[dict[str, Any]], Any]     # data -> widget
    interaction: Callable[[Any, int], None]    # (widget, k) -> None


def make_data(n_prompts: int, images_per_prompt: int, seed: int = 0) -> dict[str, Any]:
    best_of_n, rich = demo_bundles(n_prompts, images_per_prompt, seed=seed, size=64)
    rng = np.random.default_rng(seed)
    maps = {k: np.roll(np.stack([lab.heatmaps[k] for lab in rich.labels]), 3, axis=2) for k in MAP_KINDS}
    scores = np.array([[lab.scores[a] for a in SCORE_ASPECTS] for lab in rich.labels]) + rng.normal(0, 0.1, (len(rich.labels), 4))
    rich.predictions = {"heatmaps": maps, "scores": scores, "keywords": [lab.keywords for lab in rich.labels]}
    return {"best_of_n": best_of_n, "rich": rich}


def inspector(data: dict[str, Any]) -> HeatmapInspector:
    w = HeatmapInspector.from_bundle(data["rich"])
    w.source.value = "both"
    return w


def browser(data: dict[str, Any]) -> BestOfNBrowser:
    w = BestOfNBrowser.from_bundle(data["best_of_n"])
    w.reward_b.value = list(data["best_of_n"].scores)[-1]
    return w


def annotation_app(data: dict[str, Any]) -> AnnotationApp:
    """The app over the demo images (binary, four scores, points, keywords), its store in a temporary folder."""
    rich = data["rich"]
    task = task_from_arrays("bench", ["binary", "likert", "points", "keywords"], [lab.prompt for lab in rich.labels],
                            list(rich.images))
    return AnnotationApp(task, Path(tempfile.mkdtemp()) / "bench.db", "bench")


def _answer_and_confirm(app: AnnotationApp, k: int) -> None:
    app.binary.value = k % 2
    for w in app.likert.values():
        w.value = 1 + k % 5
    app.confirm_button.click()  # includes the SQLite transaction with synchronous=FULL (an fsync)


def _toggle(control, k: int) -> None:
    options = [o[1] if isinstance(o, tuple) else o for o in control.options]
    control.value = options[(options.index(control.value) + 1) % len(options)]


ENTRIES: list[Entry] = [
    Entry("inspector: next item", inspector, lambda w, k: w.next_button.click()),
    Entry("inspector: previous item", inspector, lambda w, k: w.prev_button.click()),
    Entry("inspector: jump", inspector, lambda w, k: setattr(w.jump, "value", (7 * k + 3) % len(w.images))),
    Entry("inspector: opacity slider", inspector, lambda w, k: setattr(w.opacity, "value", 0.2 + 0.6 * (k % 2))),
    Entry("inspector: threshold slider", inspector, lambda w, k: setattr(w.threshold, "value", 0.05 * (k % 10))),
    Entry("inspector: heatmap toggle", inspector, lambda w, k: _toggle(w.source, k)),
    Entry("inspector: region toggle", inspector, lambda w, k: _toggle(w.region, k)),
    Entry("inspector: prompt filter", inspector, lambda w, k: setattr(w.prompt_filter, "value", ("red", "", "circle", "blue")[k % 4])),
    Entry("inspector: score range", inspector, lambda w, k: setattr(w.score_range, "value", (0.05 * (k % 8), 1.0))),
    Entry("best-of-n: prompt change", browser, lambda w, k: setattr(w.prompt, "value", (w.prompt.value + 1) % len(w.groups))),
    Entry("best-of-n: n change", browser, lambda w, k: setattr(w.n, "value", 1 + (w.n.value % w.n.max))),
    Entry("best-of-n: reward A change", browser, lambda w, k: _toggle(w.reward_a, k)),
    Entry("best-of-n: reward B toggle", browser, lambda w, k: _toggle(w.reward_b, k)),
    Entry("annotation: click a point", annotation_app,
          lambda w, k: w.on_image_event({"type": "click", "dataX": 8 * (k % 32), "dataY": 4 * (k % 64)})),
    Entry("annotation: toggle a keyword", annotation_app, lambda w, k: setattr(w.keyword_buttons[0], "value", k % 2 == 1)),
    Entry("annotation: answer + confirm", annotation_app, _answer_and_confirm),
]


def time_entry(entry: Entry, data: dict[str, Any], repeats: int) -> list[float]:
    widget = entry.setup(data)
    entry.interaction(widget, 0)  # warm-up (untimed)
    times = []
    for k in range(1, repeats + 1):
        t0 = time.perf_counter()
        entry.interaction(widget, k)
        times.append(1000 * (time.perf_counter() - t0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=6, help="prompts (best-of-n groups) of the demo data")
    ap.add_argument("--images-per-prompt", type=int, default=32, help="images per prompt (the largest n)")
    args = ap.parse_args()
    data = make_data(args.prompts, args.images_per_prompt)
    n = len(data["rich"].images)
    print(f"{n} images of 64 px, {args.prompts} prompts x {args.images_per_prompt}; {args.repeats} interactions each "
          f"after one warm-up; budget {BUDGET_MS:.0f} ms")
    print(f"{'interaction':32s} {'median ms':>10s} {'max ms':>8s}")
    worst = 0.0
    for entry in ENTRIES:
        times = time_entry(entry, data, args.repeats)
        worst = max(worst, max(times))
        print(f"{entry.name:32s} {statistics.median(times):10.1f} {max(times):8.1f}")
    print(f"slowest interaction {worst:.1f} ms: {'within' if worst < BUDGET_MS else 'OVER'} the {BUDGET_MS:.0f} ms budget")


if __name__ == "__main__":
    main()
