"""``svformer-deploy energy report|profiles`` as a user sees them: progress, plain first line, a readable table."""

from __future__ import annotations

import pytest

from svformer_deploy.assets import default_checkpoint
from svformer_deploy.energy import get_profile, list_profiles
from svformer_deploy.energy.rules import OP_CLASSES
from tests.helpers import run_cli


def test_profiles_is_a_table_of_every_figure(capsys):
    assert run_cli(["energy", "profiles"]) in (0, None)
    out = capsys.readouterr().out
    assert "{" not in out and "'" not in out.split("\n\n")[0]  # no raw Python dicts
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["pJ", "per", "op"] and header[3:] == list_profiles()
    rows = {line.split()[0]: line.split()[2:] for line in lines[1:len(OP_CLASSES) + 1]}
    assert list(rows) == list(OP_CLASSES)
    loihi = header[3:].index("loihi")
    assert rows["neuron_mul"][loihi] == "81*" and rows["ac"][loihi] == "23.6"  # the override is listed
    for i, name in enumerate(header[3:]):
        p = get_profile(name)
        for c in OP_CLASSES:
            assert float(rows[c][i].rstrip("*")) == pytest.approx(p.pj(c)), (name, c)
    assert any(line.startswith("memory") and line.split()[-1] == "none" for line in lines)
    assert "PRE-SILICON" in out and "Horowitz" in out


def test_report_shows_progress_off_a_terminal_and_starts_with_its_result(tmp_path, capsys):
    ckpt = str(default_checkpoint())  # the shipped checkpoint the new user ran
    assert run_cli(["energy", "report", ckpt, "--videos", "2", "--baseline", "svformer-ann",
                    "--out", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("wrote ")  # no blank line left by a transient bar
    assert "counting operations: 1/2" in cap.err and "counting operations: 2/2" in cap.err
