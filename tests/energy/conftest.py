"""Fixtures shared by the energy tests."""

from __future__ import annotations

import pytest

from svformer_deploy.energy import rules


@pytest.fixture()
def scratch_registry(monkeypatch):
    """Let a test register rules without leaking them into other tests."""
    monkeypatch.setattr(rules, "_ORDER", list(rules._ORDER))
    monkeypatch.setattr(rules, "_OP_RULES", dict(rules._OP_RULES))
    monkeypatch.setattr(rules, "_MODULE_RULES", dict(rules._MODULE_RULES))
