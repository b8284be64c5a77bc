"""Registry contract for the hardware energy profiles: every name ``list_profiles()`` returns is a validated
profile with a source and a finite, non-negative price for every op class, and survives the user-file route
(written as JSON, read back by ``load_profile``'s validation) unchanged."""

from __future__ import annotations

import json
import math

import pytest

from svformer_deploy.energy import get_profile, list_profiles
from svformer_deploy.energy.profiles import HardwareProfile, load_profile
from svformer_deploy.energy.rules import OP_CLASSES

FILE_KEYS = ("name", "energy_pj", "source", "overrides_pj", "memory_pj_per_byte", "memory_source", "caveats",
             "bytes_per_value", "prices_ann")


def test_registry_is_not_empty():
    assert list_profiles()


@pytest.mark.parametrize("name", list_profiles())
def test_profile_validates_and_prices_every_op_class(name):
    p = get_profile(name)
    assert isinstance(p, HardwareProfile) and p.name == name and p.source.strip()
    for c in OP_CLASSES:
        assert math.isfinite(p.pj(c)) and p.pj(c) >= 0, (name, c)
    assert p.bytes_per_value > 0


@pytest.mark.parametrize("name", list_profiles())
def test_profile_roundtrips_through_a_user_file(name, tmp_path):
    p = get_profile(name)
    d = p.to_dict()
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({k: d[k] for k in FILE_KEYS}))
    q = load_profile(path)
    assert q.to_dict() == d
    assert get_profile(str(path)).to_dict() == d


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_profile_file_saved_with_a_byte_order_mark_is_read(suffix, tmp_path):
    """Windows editors and Excel put a UTF-8 BOM first; it must not become part of the first key."""
    d = get_profile("45nm-fp32").to_dict()
    body = {k: d[k] for k in FILE_KEYS}
    path = tmp_path / f"my profile{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(body).encode("utf-8"))  # JSON is valid YAML too
    assert load_profile(path).to_dict() == d
