"""The README's two commands are the ones CI runs, character for character (.ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("python3 -m venv .venv && ")]


def test_ci_runs_both_readme_commands_exactly():
    readme = _commands(re.search(r"## Two commands.*?(?=\n## )", (ROOT / "README.md").read_text(), re.S).group(0))
    assert len(readme) == 2 and readme[0].endswith("&& .venv/bin/svformer-deploy demo"), readme
    assert readme[1].endswith("&& .venv/bin/python -m pytest -q -p no:cacheprovider"), readme
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert sorted(ci) == sorted(readme), ci
    assert all(" -c constraints.txt " in c for c in readme), readme  # the exact versions CI uses
    assert "SVFORMER" not in (ROOT / ".ci" / "run").read_text()  # no environment variable shortens the demo
