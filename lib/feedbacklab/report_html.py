"""HTML for reports: one executed notebook → a standalone HTML file; a batch → ``index.html``.

The index is rendered by jinja2 with autoescaping on, so every string that comes
from a notebook (metric names, claims, prompts, error messages) is HTML-escaped.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

STATUSES = ("ok", "cached", "failed", "interrupted", "running", "pending", "stale", "not run")


@dataclass
class Row:
    """One notebook's line in the index (paths relative to the index file)."""

    name: str
    status: str
    duration_s: float | None = None
    html: str | None = None
    ipynb: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    key_metrics: list[str] | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    peak_memory_mb: float | None = None  # largest RSS of the kernel (and its children) during the run

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; accepted: {STATUSES}")

    @property
    def shown_metrics(self) -> dict[str, Any]:
        """The metrics shown in the row: ``key_metrics`` if the notebook named them, else all."""
        names = self.key_metrics if self.key_metrics is not None else list(self.metrics)
        return {k: self.metrics[k] for k in names if k in self.metrics}


def fmt_value(value: Any) -> str:
    """A compact text form of a metric or claim value (4 significant digits for floats)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def fmt_holds(value: bool | None) -> str:
    """✓ / ✗ / – for a claim's ``holds`` field."""
    return {True: "✓ holds", False: "✗ does not hold"}.get(value, "– not judged")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Feedback Workbook — {{ profile }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
 h1 { margin-bottom: .2em; }
 .meta { color: #666; margin-bottom: 1.5em; }
 table.runs { border-collapse: collapse; width: 100%; }
 table.runs > thead > tr > th { text-align: left; border-bottom: 2px solid #444; padding: .4em .6em; }
 table.runs > tbody > tr.main > td { border-top: 1px solid #ccc; padding: .5em .6em; vertical-align: top; }
 table.runs > tbody > tr.detail > td { padding: 0 .6em .8em 2.5em; }
 .status { font-weight: 600; padding: .1em .5em; border-radius: .3em; white-space: nowrap; }
 .st-ok { background: #d9f2dd; color: #14532d; } .st-cached { background: #e3edf9; color: #1e3a8a; }
 .st-failed, .st-interrupted { background: #fadbd8; color: #7f1d1d; }
 .st-running, .st-pending, .st-stale, .st-not-run { background: #eee; color: #444; }
 table.kv td { padding: 0 .6em 0 0; font-size: .92em; }
 table.kv td.v, td.num { font-variant-numeric: tabular-nums; text-align: right; }
 table.claims { border-collapse: collapse; margin-top: .3em; font-size: .92em; }
 table.claims th, table.claims td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
 table.claims th { background: #f5f5f5; }
 table.claims td.holds { white-space: nowrap; }
 .holds-true { color: #166534; } .holds-false { color: #991b1b; } .holds-none { color: #666; }
 pre.error { background: #fff4f4; border-left: 3px solid #b91c1c; padding: .5em .8em;
             white-space: pre-wrap; margin: .3em 0; font-size: .9em; }
 .note { color: #92400e; font-size: .92em; }
 .dim { color: #888; }
</style>
</head>
<body>
<h1>Feedback Workbook — profile <code>{{ profile }}</code></h1>
<div class="meta">
 {% if description %}{{ description }}<br>{% endif %}
 Updated {{ updated }} ·
 {% for status, n in counts %}{{ n }} {{ status }}{% if not loop.last %}, {% endif %}{% endfor %}
 {% if rows | selectattr("status", "equalto", "cached") | list %}<br><span class="dim">cached: inputs
 unchanged since its last successful run, not rerun; the duration is that run's.</span>{% endif %}
</div>
<table class="runs">
<thead><tr><th>#</th><th>notebook</th><th>status</th><th>duration</th><th>peak memory</th><th>key metrics</th></tr></thead>
<tbody>
{% for row in rows %}
<tr class="main">
 <td class="dim">{{ loop.index }}</td>
 <td>{% if row.html %}<a href="{{ row.html | urlquote }}">{{ row.name }}</a>{% else %}{{ row.name }}{% endif %}
     {% if row.ipynb %}<span class="dim">(<a href="{{ row.ipynb | urlquote }}">ipynb</a>)</span>{% endif %}</td>
 <td><span class="status st-{{ row.status | replace(' ', '-') }}">{{ row.status }}</span></td>
 <td class="num">{% if row.duration_s is not none %}{{ "%.1f" | format(row.duration_s) }} s{% else %}<span class="dim">—</span>{% endif %}</td>
 <td class="num">{% if row.peak_memory_mb %}{{ "%.0f" | format(row.peak_memory_mb) }} MiB{% else %}<span class="dim">—</span>{% endif %}</td>
 <td>{% if row.shown_metrics %}<table class="kv">
   {% for k, v in row.shown_metrics.items() %}<tr><td>{{ k }}</td><td class="v">{{ v | fmtv }}</td></tr>{% endfor %}
   </table>{% else %}<span class="dim">—</span>{% endif %}</td>
</tr>
{% if row.error or row.note or row.claims %}
<tr class="detail"><td colspan="6">
 {% if row.error %}<pre class="error">{{ row.error }}</pre>{% endif %}
 {% if row.note %}<div class="note">{{ row.note }}</div>{% endif %}
 {% if row.claims %}
 <table class="claims">
  <tr><th>paper claim</th><th>paper number</th><th>this run</th><th>holds</th></tr>
  {% for c in row.claims %}
  <tr><td>{{ c.claim }}</td><td class="num">{{ c.paper | fmtv }}</td><td class="num">{{ c.this_run | fmtv }}</td>
      <td class="holds holds-{{ c.holds | lower if c.holds is not none else 'none' }}">{{ c.holds | fmth }}</td></tr>
  {% endfor %}
 </table>
 {% endif %}
</td></tr>
{% endif %}
{% endfor %}
</tbody>
</table>
</body>
</html>
"""


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(fmtv=fmt_value, fmth=fmt_holds, urlquote=lambda s: quote(str(s)))
    return env.from_string(_TEMPLATE)


def render_index(profile: str, rows: list[Row], description: str = "") -> str:
    """The index page of one profile's batch: status, duration, metrics and claims per notebook."""
    counts = [(s, sum(r.status == s for r in rows)) for s in STATUSES]
    return _template().render(
        profile=profile,
        description=description,
        rows=rows,
        counts=[(s, n) for s, n in counts if n],
        updated=datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
    )


def write_index(path: Path, profile: str, rows: list[Row], description: str = "") -> Path:
    """Render and atomically write ``index.html`` (readers never see a half-written file)."""
    atomic_write_text(Path(path), render_index(profile, rows, description))
    return Path(path)


@lru_cache(maxsize=1)
def _exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter(embed_images=True)


def notebook_to_html(ipynb: Path, html: Path) -> Path:
    """Render an executed notebook to one standalone HTML file (images embedded) with nbconvert."""
    body, _ = _exporter().from_filename(str(ipynb))
    atomic_write_text(Path(html), body)
    return Path(html)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
