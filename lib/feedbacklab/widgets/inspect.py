"""Inspection widgets: ``HeatmapInspector`` (rich feedback, consolidated vs predicted) and ``BestOfNBrowser``.

Both take plain library objects (uint8 images, ``RichLabel``, score arrays; see ``bundles`` for what each input
holds), check them before any widget exists, keep their state in plain attributes and draw with numpy
(``render``), so each interaction answers in milliseconds and tests drive them headless: set ``.value`` on a control
or ``.click()`` a button, then read ``index``, ``image.value``, ``tokens.value``, ``summary.value``.
``static_figure()`` draws the current view with matplotlib, for exported HTML where no kernel is live.
Display a widget by leaving it as a cell's last expression (or ``display(w.widget)``).
"""
from __future__ import annotations

import base64
import html
import io
import textwrap
from typing import Any, Mapping, Sequence

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from feedbacklab.feedback.records import SCORE_ASPECTS, PointAnnotation
from feedbacklab.feedback.rich import MAP_KINDS, RichLabel

from . import render
from .bundles import BestOfNBundle, RichBundle, check_best_of_n, check_rich

GOOD, BAD = (40, 170, 70), (210, 40, 40)  # verdict frames: aligned / not aligned
ANNOTATOR_COLORS = ((0, 210, 255), (255, 225, 0), (60, 255, 120), (255, 90, 210), (255, 255, 255), (255, 140, 0))
SOURCES = ("consolidated", "predicted", "both")
NONE_LABEL = "(none)"
VERDICT_CEILING = "oracle's pick (ceiling)"  # pick_rates' key of the best-verdict pick


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


class StaticFigure(Figure):
    """A matplotlib Figure outside pyplot (no global state, never shown twice) that Jupyter shows as PNG."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


class _Widget:
    """Shared display plumbing: ``self.widget`` is the root ipywidgets box."""

    widget: W.Widget

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)


# ----------------------------------------------------------------------------- heatmaps


class HeatmapInspector(_Widget):
    """Step through images with their consolidated (and predicted) heatmaps, keywords and scores.

    ``images`` uint8 (N, H, W, 3); ``labels`` one ``RichLabel`` per image (maps at image size); ``predictions`` as
    ``RAHF.predict`` returns them (``{"heatmaps": {kind: (N, H, W)}, "scores": (N, 4) or {aspect: (N,)},
    "keywords": [...]}``, any part optional); ``raw_points`` per image, every annotator's ``PointAnnotation``.
    Next / previous step through the items matching the filters (prompt words, a score range of one consolidated
    aspect) and wrap around; ``jump`` shows any item by index (clamped to 0..N-1), matching or not.
    """

    def __init__(self, images: Any, labels: Sequence[RichLabel], predictions: Mapping[str, Any] | None = None,
                 raw_points: Sequence[Sequence[PointAnnotation]] | None = None, *, scale: int = 4,
                 point_radius: float = 2.5) -> None:
        data = check_rich(images, labels, predictions, raw_points)
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.images, self.labels = data.images, data.labels
        self.predictions, self.raw_points = data.predictions, data.raw_points
        self.scale, self.point_radius = int(scale), float(point_radius)
        self.consolidated_scores = {a: np.array([lab.scores[a] for lab in self.labels]) for a in SCORE_ASPECTS}
        annotators = sorted({r.annotator_id for rs in self.raw_points or () for r in rs})
        self.annotator_colors = {a: ANNOTATOR_COLORS[i % len(ANNOTATOR_COLORS)] for i, a in enumerate(annotators)}
        self.index: int | None = 0   # the item shown; None when nothing matches
        self.matches: list[int] = list(range(len(self.images)))
        self._syncing = False
        self._build()
        self._refresh()

    @classmethod
    def from_bundle(cls, bundle: RichBundle, **kwargs: Any) -> "HeatmapInspector":
        """An inspector over a ``RichBundle`` (``bundles.load_rich_bundle``)."""
        return cls(bundle.images, bundle.labels, bundle.predictions, bundle.raw_points, **kwargs)

    @property
    def has_predicted_maps(self) -> bool:
        return bool(self.predictions and self.predictions["heatmaps"])

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        n = len(self.images)
        self.prev_button = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.jump = W.BoundedIntText(value=0, min=0, max=n - 1, description="item", layout=W.Layout(width="160px"))
        self.status = W.HTML()
        self.prompt_filter = W.Text(placeholder="words in the prompt", description="prompt")
        self.filter_aspect = W.Dropdown(options=SCORE_ASPECTS, value="overall", description="score",
                                        layout=W.Layout(width="220px"))
        self.score_range = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05, description="range",
                                              readout_format=".2f")
        sources = SOURCES if self.has_predicted_maps else SOURCES[:1]
        self.source = W.ToggleButtons(options=sources, value="consolidated", description="heatmap")
        self.region = W.ToggleButtons(options=MAP_KINDS, value=MAP_KINDS[0], description="region")
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity")
        self.threshold = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="threshold")
        self.show_points = W.Checkbox(value=self.raw_points is not None, description="annotator points",
                                      disabled=self.raw_points is None)
        self.image = W.Image(format="png")
        self.tokens = W.HTML()
        self.scores = W.HTML()
        self.prev_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.jump.observe(self._on_jump, "value")
        for control in (self.prompt_filter, self.filter_aspect, self.score_range):
            control.observe(lambda _: self.apply_filter(), "value")
        for control in (self.source, self.region, self.opacity, self.threshold):
            control.observe(lambda _: self._draw(), "value")
        self.show_points.observe(lambda _: self._refresh(), "value")  # the points and their legend
        self.widget = W.VBox([
            W.HBox([self.prev_button, self.next_button, self.jump, self.status]),
            W.HBox([self.prompt_filter, self.filter_aspect, self.score_range]),
            W.HBox([self.source, self.region]),
            W.HBox([self.opacity, self.threshold, self.show_points]),
            W.HBox([self.image, W.VBox([self.tokens, self.scores], layout=W.Layout(margin="0 0 0 12px"))]),
        ])

    # ------------------------------------------------------------------ navigation and filters
    def matching(self) -> list[int]:
        """Indices of the items whose prompt holds every word of the prompt filter (case-insensitive) and whose
        consolidated ``filter_aspect`` score lies in ``score_range``."""
        words = self.prompt_filter.value.lower().split()
        lo, hi = self.score_range.value
        s = self.consolidated_scores[self.filter_aspect.value]
        return [i for i, lab in enumerate(self.labels)
                if lo - 1e-9 <= s[i] <= hi + 1e-9 and all(w in lab.prompt.lower() for w in words)]

    def apply_filter(self) -> None:
        """Recompute the matches; stay on the current item if it matches, else go to the first match."""
        self.matches = self.matching()
        if not self.matches:
            self.index = None
        elif self.index not in self.matches:
            later = [i for i in self.matches if self.index is not None and i > self.index]
            self.index = later[0] if later else self.matches[0]
        self._refresh()

    def next(self) -> None:
        """The next matching item after the current one, wrapping to the first."""
        if self.matches:
            later = [i for i in self.matches if self.index is None or i > self.index]
            self.show(later[0] if later else self.matches[0])

    def previous(self) -> None:
        """The matching item before the current one, wrapping to the last."""
        if self.matches:
            earlier = [i for i in self.matches if self.index is None or i < self.index]
            self.show(earlier[-1] if earlier else self.matches[-1])

    def show(self, index: int) -> None:
        """Show item ``index`` (clamped to 0..N-1), whether it matches the filters or not."""
        self.index = int(min(max(index, 0), len(self.images) - 1))
        self._refresh()

    def _on_jump(self, change: dict) -> None:
        if not self._syncing:
            self.show(change["new"])

    # ------------------------------------------------------------------ drawing
    def _refresh(self) -> None:
        i = self.index
        if i is not None and self.jump.value != i:
            self._syncing = True
            try:
                self.jump.value = i
            finally:
                self._syncing = False
        self.status.value = html.escape(self.status_text())
        self.tokens.value = self.tokens_html() if i is not None else "<i>no item matches the filters</i>"
        self.scores.value = self.scores_html() if i is not None else ""
        self._draw()

    def status_text(self) -> str:
        """E.g. ``item 3 (img-3.png) · 5 of 12 match``; ``0 of 12 match`` when nothing does."""
        count = f"{len(self.matches)} of {len(self.images)} match"
        if self.index is None:
            return count
        outside = "" if self.index in self.matches else " · outside the filters"
        return f"item {self.index} ({self.labels[self.index].item_id}) · {count}{outside}"

    def panels(self) -> list[tuple[str, np.ndarray]]:
        """The current view: (title, uint8 image enlarged ``scale`` times) per heatmap panel shown."""
        if self.index is None:
            h, w = self.images.shape[1:3]
            return [("no item matches the filters", np.full((h * self.scale, w * self.scale, 3), 235, np.uint8))]
        i, region = self.index, self.region.value
        pred = self.predictions["heatmaps"] if self.predictions else {}
        sources = ["consolidated", "predicted"] if self.source.value == "both" else [self.source.value]
        out = []
        for source in sources:
            if source == "consolidated":
                heat, title = self.labels[i].heatmaps[region], f"consolidated {region}"
            elif region in pred:
                heat, title = pred[region][i], f"predicted {region}"
            else:
                heat, title = None, f"no predicted {region} map"
            img = self.images[i] if heat is None else render.overlay(self.images[i], heat, self.opacity.value,
                                                                     self.threshold.value)
            out.append((title, self._draw_points(render.enlarge(img, self.scale))))
        return out

    def _draw_points(self, big: np.ndarray) -> np.ndarray:
        if not (self.show_points.value and self.raw_points):
            return big
        s = self.scale
        for r in self.raw_points[self.index]:
            if r.region == self.region.value:
                centres = [((x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5) for x, y in r.points]  # pixel centres, enlarged
                big = render.draw_points(big, centres, self.point_radius + 1.5, (0, 0, 0))  # outline
                big = render.draw_points(big, centres, self.point_radius, self.annotator_colors[r.annotator_id])
        return big

    def view(self) -> np.ndarray:
        """The panels side by side: what the Image widget shows."""
        return render.hstack([p for _, p in self.panels()])

    def _draw(self) -> None:
        self.image.value = render.png(self.view())

    def tokens_html(self) -> str:
        """The prompt's tokens, misaligned keywords marked: one line consolidated, one predicted (when given),
        and the colour of each annotator's points."""
        lab = self.labels[self.index]
        rows = [("consolidated", lab.keywords, "fl-kw-consolidated", "#ffd24d")]
        if self.predictions and self.predictions["keywords"] is not None:
            rows.append(("predicted", self.predictions["keywords"][self.index], "fl-kw-predicted", "#8fd3ff"))
        lines = []
        for name, keywords, css, color in rows:
            words = " ".join(f'<mark class="{css}" style="background:{color}">{html.escape(t)}</mark>' if k
                             else html.escape(t) for t, k in zip(lab.tokens, keywords))
            lines.append(f"<div><b>{name}</b>: {words}</div>")
        if self.show_points.value and self.raw_points:
            legend = " ".join(f'<span style="color:{_hex(c)}">●</span> {html.escape(a)}'
                              for a, c in self.annotator_colors.items())
            lines.append(f"<div style='font-size:11px'>annotator points: {legend}</div>")
        return "<div class='fl-tokens'>" + "".join(lines) + "</div>"

    def score_rows(self) -> list[tuple[str, float, float | None]]:
        """(aspect, consolidated, predicted or None) for the current item."""
        pred = self.predictions["scores"] if self.predictions else {}
        i = self.index
        return [(a, float(self.consolidated_scores[a][i]), float(pred[a][i]) if a in pred else None)
                for a in SCORE_ASPECTS]

    def scores_html(self) -> str:
        """The four scores, consolidated vs predicted, as a small table."""
        has_pred = bool(self.predictions and self.predictions["scores"])
        head = "<tr><th>score</th><th>consolidated</th>" + ("<th>predicted</th><th>Δ</th>" if has_pred else "")
        head += "</tr>"
        body = ""
        for a, c, p in self.score_rows():
            cells = f"<td>{a}</td><td>{c:.3f}</td>"
            if has_pred:
                cells += "<td>–</td><td></td>" if p is None else f"<td>{p:.3f}</td><td>{p - c:+.3f}</td>"
            body += f"<tr>{cells}</tr>"
        return f"<table class='fl-scores' style='font-size:12px'>{head}{body}</table>"

    def static_figure(self) -> StaticFigure:
        """A matplotlib Figure of the current view (panels, prompt with marked keywords, scores)."""
        from feedbacklab.viz import mark_tokens

        panels = self.panels()
        fig = StaticFigure(figsize=(3.2 * len(panels) + 3.2, 3.6))
        for k, (title, img) in enumerate(panels):
            ax = fig.add_axes([0.02 + k * 0.95 / (len(panels) + 1), 0.05, 0.9 / (len(panels) + 1), 0.8])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        lines = [self.status_text()]
        if self.index is not None:
            lab = self.labels[self.index]
            lines.append(textwrap.fill(f"consolidated: {mark_tokens(lab.tokens, lab.keywords)}", 48))
            if self.predictions and self.predictions["keywords"] is not None:
                predicted = mark_tokens(lab.tokens, self.predictions["keywords"][self.index])
                lines.append(textwrap.fill(f"predicted: {predicted}", 48))
            lines.append("")
            lines += [f"{a:13s} {c:.3f}" + ("" if p is None else f"  pred {p:.3f}") for a, c, p in self.score_rows()]
        fig.text(0.02 + len(panels) * 0.95 / (len(panels) + 1), 0.85, "\n".join(lines), fontsize=8, va="top",
                 family="monospace")
        return fig


# ----------------------------------------------------------------------------- best of n


class BestOfNBrowser(_Widget):
    """Per prompt, the first n images (sampling order) sorted by a reward, best first; optionally a second reward
    side by side. A green / red frame marks the verdict (aligned or not); the summary says whether each reward's
    pick is aligned, and which image the oracle would pick (the first aligned one of the n, else the first)."""

    def __init__(self, prompts: Sequence[str], images: Any, scores: Mapping[str, Any], verdict: Any = None,
                 groups: Sequence | None = None, *, scale: int = 2) -> None:
        data = check_best_of_n(prompts, images, scores, verdict, groups)
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.prompts, self.images, self.scores, self.verdict = data.prompts, data.images, data.scores, data.verdict
        self.scale = int(scale)
        self.groups = _group_indices(self.prompts, data.groups)  # per group: image indices in the given order
        self._tiles: dict[int, str] = {}  # image index -> base64 PNG of its framed, enlarged tile
        self._updating = False
        self._build()
        self._refresh()

    @classmethod
    def from_bundle(cls, bundle: BestOfNBundle, **kwargs: Any) -> "BestOfNBrowser":
        """A browser over a ``BestOfNBundle`` (``bundles.load_best_of_n_bundle``)."""
        return cls(bundle.prompts, bundle.images, bundle.scores, bundle.verdict, bundle.groups, **kwargs)

    def _build(self) -> None:
        first = [self.prompts[idx[0]] for idx in self.groups]
        labels = [f"{p} ({len(idx)})" + (f" [{g}]" if first.count(p) > 1 else "")  # [g]: a prompt in several groups
                  for g, (p, idx) in enumerate(zip(first, self.groups))]
        self.prompt = W.Dropdown(options=list(zip(labels, range(len(labels)))), value=0, description="prompt",
                                 layout=W.Layout(width="520px"))
        size = len(self.groups[0])
        self.n = W.IntSlider(value=size, min=1, max=size, description="n")
        names = list(self.scores)
        self.reward_a = W.Dropdown(options=names, value=names[0], description="reward")
        self.reward_b = W.Dropdown(options=[(NONE_LABEL, None)] + [(m, m) for m in names], value=None,
                                   description="and")
        self.summary = W.HTML()
        self.grid_a, self.grid_b = W.HTML(), W.HTML()
        self.prompt.observe(self._on_prompt, "value")
        for control in (self.n, self.reward_a, self.reward_b):
            control.observe(lambda _: self._refresh(), "value")
        self.widget = W.VBox([self.prompt, W.HBox([self.n, self.reward_a, self.reward_b]), self.summary,
                              W.HBox([self.grid_a, self.grid_b])])

    def _on_prompt(self, change: dict) -> None:
        size = len(self.groups[change["new"]])
        self._updating = True
        try:
            if size > self.n.max:
                self.n.max = size
            self.n.value = min(self.n.value, size)
            self.n.max = size
        finally:
            self._updating = False
        self._refresh()

    # ------------------------------------------------------------------ selection
    def candidates(self, group: int | None = None, n: int | None = None) -> np.ndarray:
        """Image indices of the first n images of a prompt group (default: the chosen prompt and n), given order."""
        group = self.prompt.value if group is None else group
        return self.groups[group][: self.n.value if n is None else n]

    def rewards(self) -> list[str]:
        """The rewards shown: A, then B when chosen and different."""
        b = self.reward_b.value
        return [self.reward_a.value] + ([b] if b is not None and b != self.reward_a.value else [])

    def ranked(self, reward: str, group: int | None = None, n: int | None = None) -> np.ndarray:
        """The candidates sorted by ``reward``, best first (ties keep the given order)."""
        idx = self.candidates(group, n)
        return idx[np.argsort(-self.scores[reward][idx], kind="stable")]

    def pick(self, reward: str, group: int | None = None, n: int | None = None) -> int:
        """The image index ``reward`` picks among the candidates."""
        return int(self.ranked(reward, group, n)[0])

    def oracle_pick(self, group: int | None = None, n: int | None = None) -> int | None:
        """The best-verdict candidate (the first aligned one, else the first); None without a verdict."""
        if self.verdict is None:
            return None
        idx = self.candidates(group, n)
        return int(idx[np.argmax(self.verdict[idx])])

    def pick_rates(self, n: int | None = None) -> dict[str, float]:
        """Over every prompt, the share whose pick among its first ``n`` images (default all) is aligned: for the
        first image (no selection), each reward, and ``VERDICT_CEILING``: the best-verdict pick, i.e. the share of
        prompts with an aligned image among their first n. Needs a verdict."""
        if self.verdict is None:
            raise ValueError("pick_rates needs a verdict (the browser was built with verdict=None)")
        groups = range(len(self.groups))
        picks = {"first image": [int(self.candidates(g, n)[0]) for g in groups]}
        picks |= {r: [self.pick(r, g, n) for g in groups] for r in self.scores}
        picks[VERDICT_CEILING] = [self.oracle_pick(g, n) for g in groups]
        return {name: float(self.verdict[p].mean()) for name, p in picks.items()}

    def summary_lines(self) -> list[str]:
        """One line per reward shown, then the oracle's pick; positions are ``#k`` in the prompt's given order."""
        idx = self.candidates()
        pos = {int(i): k for k, i in enumerate(idx)}
        oracle = self.oracle_pick()
        lines = []
        for r in self.rewards():
            p = self.pick(r)
            line = f"{r} picks #{pos[p]} (score {self.scores[r][p]:.3g})"
            if self.verdict is not None:
                line += f": pick is aligned: {'yes' if self.verdict[p] else 'no'}"
                line += "; the oracle's pick too" if p == oracle else f"; the oracle picks #{pos[oracle]}"
            lines.append(line)
        if self.verdict is None:
            lines.append("no verdict given: the pick cannot be checked")
        else:
            lines.append(f"{int(self.verdict[idx].sum())} of {len(idx)} images aligned")
        return lines

    # ------------------------------------------------------------------ drawing
    def tile(self, index: int) -> np.ndarray:
        """Image ``index`` enlarged, framed green (aligned) or red (not) when a verdict is given."""
        big = render.enlarge(self.images[index], self.scale)
        if self.verdict is not None:
            big = render.frame(big, GOOD if self.verdict[index] else BAD, max(2, self.scale + 1))
        return big

    def _tile_uri(self, index: int) -> str:
        if index not in self._tiles:
            self._tiles[index] = base64.b64encode(render.png(self.tile(index))).decode("ascii")
        return self._tiles[index]

    def grid_html(self, reward: str) -> str:
        """The ranked candidates as an HTML grid of images with their rank, position and score."""
        pos = {int(i): k for k, i in enumerate(self.candidates())}
        h, w = self.images.shape[1] * self.scale, self.images.shape[2] * self.scale
        cells = []
        for rank, i in enumerate(self.ranked(reward), 1):
            i = int(i)
            caption = f"{rank}. #{pos[i]} · {self.scores[reward][i]:.3g}"
            cells.append(f'<figure style="margin:2px;text-align:center;font-size:11px">'
                         f'<img src="data:image/png;base64,{self._tile_uri(i)}" width="{w}" height="{h}">'
                         f'<figcaption>{html.escape(caption)}</figcaption></figure>')
        return (f"<div><b>{html.escape(reward)}</b><div style='display:flex;flex-wrap:wrap;max-width:{8 * (w + 8)}px'>"
                + "".join(cells) + "</div></div>")

    def _refresh(self) -> None:
        if self._updating:
            return
        rewards = self.rewards()
        self.summary.value = "<br>".join(html.escape(line) for line in self.summary_lines())
        self.grid_a.value = self.grid_html(rewards[0])
        self.grid_b.value = self.grid_html(rewards[1]) if len(rewards) > 1 else ""

    def static_figure(self) -> StaticFigure:
        """A matplotlib Figure of the current view: one row per reward shown, candidates best first."""
        rewards, idx = self.rewards(), self.candidates()
        pos = {int(i): k for k, i in enumerate(idx)}
        cols = len(idx)
        fig = StaticFigure(figsize=(max(4.0, 1.25 * cols), 1.5 * len(rewards) + 1.2))
        axes = fig.subplots(len(rewards), cols, squeeze=False)
        for row, r in enumerate(rewards):
            for col, i in enumerate(self.ranked(r)):
                ax = axes[row, col]
                ax.imshow(self.tile(int(i)), interpolation="nearest")
                ax.set_title(f"#{pos[int(i)]} · {self.scores[r][i]:.3g}", fontsize=7)
                ax.axis("off")
            axes[row, 0].text(-0.1, 0.5, r, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center",
                              fontsize=8)
        fig.suptitle(textwrap.fill(self.prompts[int(idx[0])], 90) + "\n" + "\n".join(self.summary_lines()), fontsize=8)
        fig.subplots_adjust(top=1 - (0.25 + 0.05 * len(rewards)) / (1 + 0.3 * len(rewards)), left=0.05, right=0.98,
                            bottom=0.02, wspace=0.05, hspace=0.3)
        return fig


def _group_indices(prompts: Sequence[str], groups: Sequence | None) -> list[np.ndarray]:
    """Image indices per group, groups in order of first appearance; without ``groups`` runs of equal prompts."""
    if groups is None:
        keys, run = [], -1
        for i, p in enumerate(prompts):
            run += i == 0 or p != prompts[i - 1]
            keys.append(run)
    else:
        keys = list(groups)
    order: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    return [np.array(v, dtype=int) for v in order.values()]
