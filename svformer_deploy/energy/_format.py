"""Number and word formatting shared by the energy tables (report.md, `energy price`, the CLI lines)."""

from __future__ import annotations

import math

__all__ = ["sig_figs", "plural"]


def sig_figs(x: float, n: int = 4) -> str:
    """``x`` with ``n`` significant figures, trailing zeros kept so a column reads alike (``17.00`` beside
    ``16.93``); scientific notation (``n`` significant figures) below 1e-3 and from 1e5 up."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if not 1e-3 <= abs(x) < 1e5:
        return f"{x:.{n - 1}e}"
    d = n - 1 - math.floor(math.log10(abs(x)))
    d = n - 1 - math.floor(math.log10(abs(round(x, d))))  # rounding may carry a digit (9.99996 -> 10.00)
    return f"{x:.{max(d, 0)}f}"


def plural(n: int, word: str) -> str:
    """``1 video``, ``2 videos``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
