"""Bar charts as inline SVG, drawn on the server: no chart library, nothing for the browser to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10):
        magnitude = 10 ** (len(str(int(v))) - 1)
        top = step * magnitude
        if top >= v:
            return float(top)
    return float(v)


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series], *, stacked: bool = False,
              y_max: float | None = None, percent: bool = False, target: float | None = None,
              width: int = 640, height: int = 240) -> str:
    """Grouped (or stacked) bars, one group per label. ``None`` values draw nothing; ``target`` draws a dashed
    line (e.g. the service-level goal)."""
    left, right, top, bottom = 44, 12, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(labels))
    totals = [sum((s.values[i] or 0.0) for s in series) if stacked else
              max([(s.values[i] or 0.0) for s in series] or [0.0]) for i in range(len(labels))]
    top_value = y_max if y_max is not None else _nice_max(max(totals or [0.0]))
    if not percent and y_max is None:
        top_value = max(4.0, top_value)          # counts: whole-number ticks
    scale = plot_h / top_value if top_value else 0.0
    group_w = plot_w / n
    bars_per_group = 1 if stacked else max(1, len(series))
    bar_w = max(2.0, min(48.0, group_w * 0.7 / bars_per_group))
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    for k in range(5):
        value = top_value * k / 4
        y = top + plot_h - value * scale
        text = f"{value * 100:.0f}%" if percent else f"{value:g}"
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">{text}</text>')
    for i, label in enumerate(labels):
        gx = left + i * group_w + (group_w - bar_w * bars_per_group) / 2
        base = top + plot_h
        for j, s in enumerate(series):
            v = s.values[i]
            if v is None:
                continue
            h = v * scale
            x = gx if stacked else gx + j * bar_w
            y = base - h
            shown = f"{v * 100:.0f}%" if percent else f"{v:g}"
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" class="{escape(s.css)}">'
                       f'<title>{escape(s.name)} {escape(label)}: {shown}</title></rect>')
            if stacked:
                base = y
        short = label if len(label) <= 14 else label[:13] + "…"
        out.append(f'<text x="{left + i * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" class="axis" '
                   f'text-anchor="middle">{escape(short)}</text>')
    if target is not None and scale:
        y = top + plot_h - target * scale
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="target"/>')
    lx = left
    for s in series:
        out.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" class="{escape(s.css)}"/>'
                   f'<text x="{lx + 14}" y="{height - 7}" class="axis">{escape(s.name)}</text>')
        lx += 24 + 7 * len(s.name)
    out.append("</svg>")
    return "".join(out)
