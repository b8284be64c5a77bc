"""Settings of the Lava target read from the environment (``$SVFORMER_LAVA_*``)."""

from __future__ import annotations

import os

__all__ = ["env_setting"]


def env_setting(name: str) -> str | None:
    """The value of ``$name`` without the whitespace around it; ``None`` when it is unset or empty (only
    whitespace counts as empty), so that ``NAME= svformer-deploy ...`` means the default, as in most tools."""
    return os.environ.get(name, "").strip() or None
