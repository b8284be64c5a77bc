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


def test_int_profiles_use_horowitz_measured_figures_where_he_measured_the_width():
    """The reported case: 45nm-int<N> for N >= 8 scaled the int8 figures although Horowitz gives int32 ones (mult
    3.1 pJ, add 0.1 pJ) and an int16 add (0.05 pJ), and the caveat read as if nothing at or above 8 bits were
    measured. Measured figures are used as given; every other one is interpolated between the measured widths
    around it (the power law through both) or, below 8 bits, scaled from int8; the caveat names exactly which
    figure is derived."""
    int32, int16, int24, int4 = (get_profile(f"45nm-int{b}") for b in (32, 16, 24, 4))
    assert (int32.pj("mul"), int32.pj("add"), int32.pj("mac")) == pytest.approx((3.1, 0.1, 3.2))
    assert int32.caveats.startswith("MEASURED") and "NOT MEASURED" not in int32.caveats
    assert "mult 3.1 pJ (int32, measured), add 0.1 pJ (int32, measured)" in int32.source
    e = math.log(3.1 / 0.2) / math.log(4)  # the multiply's power law through int8 and int32
    assert (int16.pj("mul"), int16.pj("add")) == pytest.approx((0.2 * 2 ** e, 0.05))  # add measured
    assert int16.caveats.startswith("DERIVED, NOT MEASURED (multiply)") and "the add is his measured int16" in \
        int16.caveats
    assert (int24.pj("mul"), int24.pj("add")) == pytest.approx((0.2 * 3 ** e, 0.05 * 24 / 16))  # add: x1 per x1
    assert "add 0.05 pJ x 24/16 = 0.075 pJ (interpolated between int16 and int32)" in int24.source
    assert (int4.pj("mul"), int4.pj("add")) == pytest.approx((0.05, 0.015))
    assert "(multiply and add)" in int4.caveats and "from his 8-bit figures" in int4.caveats
    assert "mult 0.2 pJ x (4/8)^2 = 0.05 pJ (scaled from int8)" in int4.source
    from svformer_deploy.energy.profiles import quantised_profile

    assert quantised_profile(8).energy_pj == get_profile("45nm-int8").energy_pj  # the registered int8: the same
    for bits in range(1, 33):
        p = quantised_profile(bits)
        measured = (bits in (8, 32), bits in (8, 16, 32))
        assert ("(multiply" in p.caveats) != measured[0] and (" add)" in p.caveats) != measured[1], bits
        assert p.caveats.startswith("MEASURED") == all(measured) and p.bytes_per_value == bits / 8, bits
        if bits > 1:  # more bits never cost less
            q = quantised_profile(bits - 1)
            assert p.pj("mul") > q.pj("mul") and p.pj("add") > q.pj("add"), bits
