"""The one JSON and CSV writers of output files: strict JSON (missing values as null), CSV that round-trips any text."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from svformer_deploy._atomic import atomic_write_csv, atomic_write_json, json_text

AWKWARD = ['a,b', 'say "hi"', "two\nlines", "naïve Ωmega 日本", "", "trailing, \"both\"\n"]


def test_json_maps_missing_values_to_null_and_is_strict(tmp_path):
    obj = {"nan": float("nan"), "inf": [math.inf, -math.inf, 1.5], "np": np.float32("nan"),
           "arr": np.array([1.0, np.nan]), "nested": {"x": (float("nan"), 2)}, "name": AWKWARD}
    path = atomic_write_json(tmp_path / "r.json", obj)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    assert back == {"nan": None, "inf": [None, None, 1.5], "np": None, "arr": [1.0, None],
                    "nested": {"x": [None, 2]}, "name": AWKWARD}
    with pytest.raises(TypeError):  # not JSON-able stays an error, never silently written
        json_text({"x": object()})
    assert not list(tmp_path.glob(".*"))


def test_csv_round_trips_awkward_text_with_csv_and_pandas(tmp_path):
    rows = [{"video_id": name, "label": i} for i, name in enumerate(AWKWARD)]
    rows[2]["extra"] = "only here"  # a column that appears late still gets a header
    path = atomic_write_csv(tmp_path / "p.csv", rows)
    with open(path, encoding="utf-8", newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["video_id"] for r in back] == AWKWARD and [r["extra"] for r in back][2] == "only here"
    df = pd.read_csv(path, keep_default_na=False)
    assert df["video_id"].tolist() == AWKWARD and df["label"].tolist() == list(range(len(AWKWARD)))


# ------------------------------------------------------------------------------------- what --force may replace
from pathlib import Path  # noqa: E402

from svformer_deploy._outputs import MARKER, check_kind, mark_output, output_kinds, write_output_dir  # noqa: E402
from svformer_deploy.demo import DEMO_OUTPUT  # noqa: E402
from svformer_deploy.energy.report import REPORT_OUTPUT as ENERGY_REPORT  # noqa: E402
from svformer_deploy.errors import OutputExistsError  # noqa: E402
from svformer_deploy.exporters.bundle import BUNDLE_OUTPUT  # noqa: E402
from svformer_deploy.training.outputs import EVALUATION, FINETUNE_RUN, TRAIN_RUN  # noqa: E402


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("x")
    return folder


def _report(tmp: Path) -> None:
    _files(tmp, "report.md", "summary.json", "per_layer.csv", "per_video.csv", "ops.png")


def test_every_output_folder_is_marked_inside_the_atomic_write(tmp_path):
    out = write_output_dir(tmp_path / "r é", _report, ENERGY_REPORT)  # the kind its command declares
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["tool"] == "svformer-deploy" and marker["kinds"] == ["energy-report"]
    assert marker["version"] and marker["written"]
    assert output_kinds(out) == ["energy-report"]
    more = write_output_dir(tmp_path / "r2", lambda tmp: (_report(tmp), _files(tmp, "new_figure.svg")), ENERGY_REPORT)
    assert output_kinds(more) == ["energy-report"]  # a new kind of file in a report: still known by the marker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r é", "r2"]


def test_force_replaces_an_empty_folder_or_an_earlier_output_of_the_same_kind(tmp_path):
    (tmp_path / "empty").mkdir()
    write_output_dir(tmp_path / "empty", _report, ENERGY_REPORT, force=True)
    out = write_output_dir(tmp_path / "r", _report, ENERGY_REPORT)
    write_output_dir(out, _report, ENERGY_REPORT, force=True)
    assert output_kinds(out) == ["energy-report"]
    # a file added after the write is not the command's: --force would delete it, so it refuses
    (out / "my figure.png").write_text("mine")
    with pytest.raises(OutputExistsError, match="my figure.png"):
        write_output_dir(out, _report, ENERGY_REPORT, force=True)
    assert (out / "my figure.png").read_text() == "mine"


@pytest.mark.parametrize("setup", [
    lambda d: _files(d, "thesis.txt"),
    lambda d: _files(d, "report.md", "summary.json", "per_layer.csv", "per_video.csv", "thesis.txt"),
    lambda d: write_output_dir(d, lambda tmp: _files(tmp, "model.nir"), BUNDLE_OUTPUT),
    lambda d: _files(d, "firing_rates.csv", "predictions.csv", "summary.json"),
    lambda d: (_files(d, "a.png"), (d / MARKER).write_text("{not json")),
], ids=["users-folder", "report-plus-a-users-file", "export-bundle", "unmarked-sparsity-report", "broken-marker"])
def test_force_never_replaces_a_users_folder_or_another_kind(tmp_path, setup):
    out = tmp_path / "my papers ü"
    setup(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for force in (False, True):
        with pytest.raises(OutputExistsError) as err:
            write_output_dir(out, _report, ENERGY_REPORT, force=force)
        assert "remove that folder yourself" in str(err.value) and "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary folder left


def test_a_refused_kind_is_named_and_the_check_runs_again_after_the_build(tmp_path):
    bundle = write_output_dir(tmp_path / "b", lambda tmp: _files(tmp, "model.onnx"), BUNDLE_OUTPUT)
    with pytest.raises(OutputExistsError, match=r"is an export bundle .*an energy report"):
        check_kind(bundle, ENERGY_REPORT)
    with pytest.raises(OutputExistsError, match="is an export bundle"):
        write_output_dir(bundle, _report, ENERGY_REPORT, force=True)
    assert (bundle / "model.onnx").exists()


def test_commands_writing_files_into_a_folder_record_their_kind_beside_others(tmp_path):
    run = _files(tmp_path / "run", "last.pt", "metrics.csv", "thesis.txt")
    mark_output(run, TRAIN_RUN)
    assert output_kinds(run) == ["train"]
    mark_output(run, EVALUATION)
    assert output_kinds(run) == ["train", "evaluation"]
    check_kind(run, TRAIN_RUN)
    check_kind(run, EVALUATION)
    with pytest.raises(OutputExistsError, match="fine-tuning run"):
        check_kind(run, FINETUNE_RUN)
    with pytest.raises(OutputExistsError):  # a whole-folder command never deletes a run (or thesis.txt)
        check_kind(run, DEMO_OUTPUT)


def test_a_single_file_output_is_replaced_only_when_it_is_of_its_kind(tmp_path):
    from svformer_deploy._outputs import refuse_existing_file

    mine, theirs = tmp_path / "a.json", tmp_path / "b.txt"
    mine.write_text("ours")
    theirs.write_text("important")
    ours = lambda p: p.read_text() == "ours"  # noqa: E731
    refuse_existing_file(tmp_path / "new.json", False, kind="summary", is_kind=ours)  # absent: fine
    refuse_existing_file(mine, True, kind="summary", is_kind=ours)
    with pytest.raises(OutputExistsError, match="--force"):
        refuse_existing_file(mine, False, kind="summary", is_kind=ours)
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="not an earlier summary"):
            refuse_existing_file(theirs, force, kind="summary", is_kind=ours)
    with pytest.raises(OutputExistsError, match="is a folder"):
        refuse_existing_file(tmp_path, True, kind="summary", is_kind=ours)


def test_a_run_folder_may_hold_only_what_train_finetune_evaluate_wrote(tmp_path):
    """The folder rule of train / finetune / evaluate (refuse_whole_output): their earlier outputs, a budget
    run's folder, a bundle exported into the run folder, a killed run's temporary file and a file browser's file
    are fine; one other entry is refused by name."""
    from svformer_deploy._outputs import refuse_whole_output

    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.json", "eval.json", ".last.pt.k3j9x0qa.tmp",
                 ".DS_Store"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    mark_output(run, TRAIN_RUN)
    mark_output(run, EVALUATION)
    budget = run / "budget-0.05"
    budget.mkdir()
    (budget / "finetune.json").write_text("{}")
    mark_output(budget, FINETUNE_RUN)
    write_output_dir(run / "nir", lambda tmp: (tmp / "manifest.json").write_text("{}"), BUNDLE_OUTPUT)
    for output in (TRAIN_RUN, EVALUATION):
        refuse_whole_output(run, output)  # nothing foreign: no error
    with pytest.raises(OutputExistsError, match=r"is a training run .*svformer-deploy finetune writes only into a "
                                                 r"new or empty folder, or one holding only earlier finetune and "
                                                 r"evaluate outputs"):
        refuse_whole_output(run, FINETUNE_RUN)  # its last.pt and metrics would overwrite the training run's
    (run / "budget-notes").mkdir()  # a folder that is not a fine-tuning run
    (run / ".thesis.txt.k3j9x0qa.tmp").write_text("x")  # a temporary of a file no run writes
    with pytest.raises(OutputExistsError, match=r"holds \.thesis\.txt\.k3j9x0qa\.tmp, budget-notes, which "):
        refuse_whole_output(run, TRAIN_RUN)
