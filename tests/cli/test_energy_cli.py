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


def test_the_int4_profile_of_the_report_is_listed_with_its_derivation(capsys):
    """The int4 ANN row is priced under 45nm-int4: `energy profiles` lists it, its figures (scaled from Horowitz's
    int8: multiply x (4/8)^2, add x 4/8) and the statement that the scaling is assumed, not measured."""
    assert run_cli(["energy", "profiles"]) in (0, None)
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()[3:]
    assert "45nm-int4" in header and "45nm-int5" in header  # ceil(log2(T+1)) for T = 8 and T = 16
    rows = {line.split()[0]: line.split()[2:] for line in out.splitlines()[1:len(OP_CLASSES) + 1]}
    int4 = header.index("45nm-int4")
    assert float(rows["mac"][int4]) == pytest.approx(0.2 / 4 + 0.03 / 2)  # 0.05 + 0.015 pJ, by hand
    assert float(rows["ac"][int4]) == pytest.approx(0.015)
    line = next(line for line in out.splitlines() if line.startswith("45nm-int4: "))
    assert "mult 0.2 pJ x (4/8)^2 = 0.05 pJ" in line and "add 0.03 pJ x 4/8 = 0.015 pJ" in line
    assert "DERIVED, NOT MEASURED" in out.split("45nm-int4: ", 1)[1].split("\n45nm-int5: ")[0]


def test_a_profile_of_the_int_family_is_listed_by_name(capsys):
    assert run_cli(["energy", "profiles", "45nm-int3"]) in (0, None)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[3:] == ["45nm-int3"]
    assert "(3/8)^2" in out and "DERIVED, NOT MEASURED" in out
    assert run_cli(["energy", "profiles", "45nm-int0"]) == 2
    assert "45nm-int<N> profile needs N = 1..32 bits, got 0" in capsys.readouterr().err


def test_price_accepts_the_int4_profile(capsys):
    from pathlib import Path

    rates = Path(__file__).parents[1] / "energy" / "data" / "svformer_ucf101_published_rates.csv"
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(rates), "--profile",
                    "45nm-int4", "--views", "1x1"]) in (0, None)
    out = capsys.readouterr().out
    assert "profile `45nm-int4`" in out and "(4/8)^2" in out


@pytest.mark.parametrize(("profile", "words"), [("45nm-int4", "DERIVED, NOT MEASURED"), ("loihi", "PRE-SILICON"),
                                                ("45nm-fp32", "not measurements of any chip")])
def test_price_prints_the_caveats_of_its_profile(profile, words, capsys):
    """The reported case: the Markdown of `energy price` printed no caveat (int4's "DERIVED, NOT MEASURED" only in
    --json, loihi's "PRE-SILICON" nowhere). It now prints the registry's caveats as `energy report` does."""
    from pathlib import Path

    rates = Path(__file__).parents[1] / "energy" / "data" / "svformer_ucf101_published_rates.csv"
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(rates), "--profile", profile,
                    "--views", "1x1"]) in (0, None)
    out = capsys.readouterr().out
    caveats = out.split("\n## Caveats\n\n", 1)[1].split("\n\n", 1)[0]
    assert caveats == f"- Profile `{profile}`: {get_profile(profile).caveats}" and words in caveats


def test_report_prints_its_headline_from_the_returned_result(tmp_path, monkeypatch, capsys):
    """The headline comes from the summary the service layer returns, not from re-reading summary.json."""
    from svformer_deploy import api

    summary = {"videos": 3, "views_per_video": 2, "profile": {"name": "45nm-int8"},
               "headline": {"per_video_mj": {"total_mj": 1.5, "compute_mj": 0.25, "memory_mj": 1.25,
                                             "memory_fetch_per_event_mj": 4.0}}}
    out = tmp_path / "r"  # never written: the stub returns a result without files
    monkeypatch.setattr(api, "energy_report", lambda *a, **k: api.EnergyReportOutcome(
        out, {"summary.json": out / "summary.json"}, summary))
    assert run_cli(["energy", "report", str(default_checkpoint()), "--videos", "3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out}", "headline (45nm-int8, 3 videos, 2 views each): 1.500 mJ per video = compute 0.2500 + "
        "memory 1.250 (weights fetched per event: memory 4.000); see report.md"]
