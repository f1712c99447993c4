"""Small server-side SVG charts: stacked bars per minute by outcome, and a latency line.

Pure: numbers in, SVG markup out (every label escaped), so the dashboard needs no JavaScript
chart library and nothing fetched at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

OUTCOME_COLOURS = {
    "success": "#2e7d32",
    "http_4xx": "#ef6c00",
    "http_5xx": "#c62828",
    "gone": "#6a1b9a",
    "timeout": "#8d6e63",
    "connect": "#455a64",
}
OTHER_COLOUR = "#9e9e9e"

WIDTH_PX = 960
HEIGHT_PX = 160
PAD_PX = 28


def _frame(inner: str, title: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}" '
        f'width="{WIDTH_PX}" height="{HEIGHT_PX}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{inner}</svg>"
    )


def _axis(top: float, unit: str) -> str:
    y0 = HEIGHT_PX - PAD_PX
    return (
        f'<line x1="{PAD_PX}" y1="{y0}" x2="{WIDTH_PX - 4}" y2="{y0}" stroke="#bbb"/>'
        f'<text x="2" y="12" font-size="10" fill="#555">{escape(_fmt(top))} {escape(unit)}</text>'
        f'<text x="2" y="{y0}" font-size="10" fill="#555">0</text>'
    )


def _fmt(x: float) -> str:
    return f"{x:.0f}" if x >= 10 or x == int(x) else f"{x:.1f}"


def stacked_bars(
    buckets: Sequence[str],
    counts: Mapping[str, Sequence[int]],
    *,
    title: str,
    unit: str = "/min",
    names: Mapping[str, str] | None = None,
) -> str:
    """One bar per bucket, stacked by outcome (``counts[outcome][i]``), with a legend that says each
    outcome as ``names`` does (its code otherwise)."""
    said = {outcome: (names or {}).get(outcome, outcome) for outcome in counts}
    n = max(len(buckets), 1)
    totals = [sum(series[i] for series in counts.values()) for i in range(len(buckets))]
    top = max([*totals, 1])
    plot_h = HEIGHT_PX - 2 * PAD_PX
    slot = (WIDTH_PX - PAD_PX - 4) / n
    parts = [_axis(top, unit)]
    for i, label in enumerate(buckets):
        y: float = HEIGHT_PX - PAD_PX
        for outcome, series in sorted(counts.items()):
            value = series[i]
            if not value:
                continue
            h = value / top * plot_h
            y -= h
            colour = OUTCOME_COLOURS.get(outcome, OTHER_COLOUR)
            parts.append(
                f'<rect x="{PAD_PX + i * slot:.1f}" y="{y:.1f}" width="{max(slot - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)} {escape(said[outcome])}: {value}</title></rect>"
            )
    if buckets:
        parts.append(_x_labels(buckets[0], buckets[-1]))
    # the legend sits at the top right, clear of the axis's scale label at the top left
    widths = {outcome: 14 + 6 * len(said[outcome]) + 12 for outcome in counts}
    legend_x = WIDTH_PX - 4 - sum(widths.values())
    for outcome in sorted(counts):
        colour = OUTCOME_COLOURS.get(outcome, OTHER_COLOUR)
        parts.append(
            f'<rect x="{legend_x}" y="2" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 13}" y="11" font-size="10" fill="#333">{escape(said[outcome])}</text>'
        )
        legend_x += widths[outcome]
    return _frame("".join(parts), title)


def line(buckets: Sequence[str], values: Sequence[float | None], *, title: str, unit: str = "ms") -> str:
    """A polyline over the buckets; ``None`` (no data that minute) breaks the line."""
    n = max(len(buckets), 1)
    known = [v for v in values if v is not None]
    top = max([*known, 1.0])
    plot_h = HEIGHT_PX - 2 * PAD_PX
    slot = (WIDTH_PX - PAD_PX - 4) / n
    parts = [_axis(top, unit)]
    run: list[str] = []
    runs: list[list[str]] = []
    for i, value in enumerate(values):
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        x = PAD_PX + i * slot + slot / 2
        y = HEIGHT_PX - PAD_PX - value / top * plot_h
        run.append(f"{x:.1f},{y:.1f}")
    if run:
        runs.append(run)
    for points in runs:
        if len(points) == 1:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="#1565c0"/>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{" ".join(points)}"/>'
            )
    if buckets:
        parts.append(_x_labels(buckets[0], buckets[-1]))
    return _frame("".join(parts), title)


def _x_labels(first: str, last: str) -> str:
    y = HEIGHT_PX - 8
    return (
        f'<text x="{PAD_PX}" y="{y}" font-size="10" fill="#555">{escape(first)}</text>'
        f'<text x="{WIDTH_PX - 4}" y="{y}" font-size="10" fill="#555" text-anchor="end">{escape(last)}</text>'
    )
