"""Small charts drawn on the server as SVG: no script, and nothing the page's CSP forbids (colours come from
classes in admin.css, never from `style` attributes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["minute_bars"]

WIDTH, HEIGHT = 180, 48
#: stacked from the bottom: (key in a chart point, CSS class, legend)
SERIES = (("delivered", "c-ok", "delivered"), ("failed", "c-bad", "not delivered"), ("pending", "c-wait", "accepted"))


def minute_bars(points: Sequence[dict[str, Any]], label: str) -> Markup:
    """One bar a minute (oldest on the left), stacked: delivered, other final states, accepted. `points`:
    {"delivered", "failed", "pending"} counts a minute, as `/api/overview` gives them in `chart`."""
    step = WIDTH / max(len(points), 1)
    peak = max((sum(int(p.get(k, 0)) for k, _, _ in SERIES) for p in points), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>',
        f'<line class="c-axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>',
    ]
    for i, point in enumerate(points):
        bottom = float(HEIGHT)
        for key, css, legend in SERIES:
            n = int(point.get(key, 0))
            if n <= 0:
                continue
            h = max(n / peak * (HEIGHT - 2), 1.0)
            bottom -= h
            parts.append(
                f'<rect class="{css}" x="{i * step + 0.5:.1f}" y="{bottom:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}"><title>{escape(point.get("minute", ""))}: {n} {legend}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in it is a number or escaped above
