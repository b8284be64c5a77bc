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
