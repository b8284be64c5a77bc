"""The generated sections of ``docs/energy.md``: the counting rules, the memory model and the conventions, each
written once in code (docstrings / :data:`memory.RULES`) and copied here, so the docs cannot drift.

Regenerate with ``python -m svformer_deploy.energy._docs [docs/energy.md]``; a test fails when they differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from svformer_deploy.energy.conventions import CONVENTIONS
from svformer_deploy.energy.memory import RULES as MEMORY_RULES
from svformer_deploy.energy.rules import rules_markdown

__all__ = ["SECTIONS", "generated_sections", "regenerate"]


def _conventions() -> str:
    return "".join(f"- **{c.title}** (`{c.name}`): {c.doc}\n" for c in CONVENTIONS.values())


def generated_sections() -> dict[str, str]:
    """Section name -> its generated markdown (between ``<!-- name:begin -->`` and ``<!-- name:end -->``)."""
    return {"rules": rules_markdown(), "memory": MEMORY_RULES, "conventions": _conventions()}


SECTIONS = ("rules", "memory", "conventions")


def regenerate(path: str | Path) -> None:
    """Rewrite every generated section of the markdown file ``path`` in place."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    for name, body in generated_sections().items():
        text = re.sub(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", lambda m: m.group(1) + body + m.group(2),
                      text, flags=re.S)
    p.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    regenerate(sys.argv[1] if len(sys.argv) > 1 else "docs/energy.md")
