"""Helpers shared by the tests."""

from __future__ import annotations

import pytest

from svformer_deploy.cli import main


def run_cli(argv: list[str]) -> int | None:
    """Run the CLI in-process and return its exit code (``main`` always exits)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code
