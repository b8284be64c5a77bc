"""Bundles are checked, not trusted: a hand-edited manifest.json is refused by `verify` with one line and exit 2.

Two kinds of edit: a plain edit (caught by the manifest's integrity digest) and a *resealed* one, where the digest
is recomputed after the edit (as a tool that rewrites manifests would), which the verifiers must still refuse by
re-deriving the manifest from the model and cross-checking the partition files and the checkpoint.
"""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svformer_deploy.exporters import export_checkpoint
from svformer_deploy.exporters.bundle import MANIFEST_NAME, manifest_digest
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def nir_bundle(tiny_ckpt, tmp_path_factory):
    path, _, _ = export_checkpoint(tiny_ckpt, "nir", tmp_path_factory.mktemp("edits") / "bundle")
    return path


def _edited_copy(src, dst, edit, reseal: bool):
    shutil.copytree(src, dst)
    d = json.loads((src / MANIFEST_NAME).read_text())
    edit(d)
    if reseal:
        d["integrity"] = manifest_digest(d)
    (dst / MANIFEST_NAME).write_text(json.dumps(d))
    return dst


def _verify(path, capsys) -> tuple[int, str]:
    code = run_cli(["verify", str(path), "--num-videos", "1"])
    return code, capsys.readouterr().err


def _plan_node(d, name):
    return next(n for n in d["plan"]["nodes"] if n["name"] == name)


def _swap_plan_nodes(d):
    nodes = d["plan"]["nodes"]
    nodes[1], nodes[2] = nodes[2], nodes[1]


def _first_host_node(d, key):
    return next(n for n in d["plan"]["nodes"] if n["kind"] == "host" and key in n.get("attrs", {}))


EDITS = {  # the edits issue 11 names, each a real failure before bundle format 2; since format 3 the graph
    # (signals, steps, schedule, graph output) is derived from the plan, so its edits are edits of the plan
    "dt": lambda d: d.__setitem__("dt", 2e-4),
    "num_frames": lambda d: d["config"].__setitem__("num_frames", d["config"]["num_frames"] + 1),
    "plan node shape": lambda d: _plan_node(d, "blocks1.0.lif").__setitem__(
        "shape", [2 * n for n in _plan_node(d, "blocks1.0.lif")["shape"]]),
    "class names": lambda d: d.__setitem__("class_names", ["a", "b", "c"]),
    "swapped plan nodes": _swap_plan_nodes,
    "plan output": lambda d: d["plan"].__setitem__("output", "logits2"),
    "checkpoint sha256 emptied": lambda d: d.__setitem__("checkpoint_sha256", ""),  # found by the property below
    "approximation text": lambda d: d["approximations"].append("anything"),
    "approximation record": lambda d: d["approximations"].append(
        {"kind": "bn_time_average", "text": "made up", "params": {"num_frames": 8}}),
    "plan host op attrs": lambda d: _first_host_node(d, "head_dim")["attrs"].__setitem__("head_dim", 7),
    # the export plan the bundle carries (issue 15): a valid but different plan, and two invalid ones
    "plan neuron tau": lambda d: _plan_node(d, "head.lif").__setitem__("tau", _plan_node(d, "head.lif")["tau"] + 1),
    "plan coverage": lambda d: _plan_node(d, "head.lif")["modules"].clear(),
    "plan host op": lambda d: _plan_node(d, "forward_features.cat").__setitem__("op", "softmax"),
    # a graph stored beside the plan again (as format 2 did): not a field of format 3
    "graph stored": lambda d: d.__setitem__("schedule", [{"partition": "partition_0"}]),
}


@pytest.mark.parametrize("reseal", [False, True], ids=["edited", "edited+resealed"])
@pytest.mark.parametrize("name", list(EDITS))
def test_named_edit_is_one_line_and_exit_2(nir_bundle, tmp_path, capsys, name, reseal):
    path = _edited_copy(nir_bundle, tmp_path / "b", EDITS[name], reseal)
    code, err = _verify(path, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("version", [1, 2])
def test_older_bundle_asks_for_a_re_export(nir_bundle, tmp_path, capsys, version):
    path = _edited_copy(nir_bundle, tmp_path / "b", lambda d: d.__setitem__("format_version", version), reseal=True)
    code, err = _verify(path, capsys)
    assert code == 2 and f"version {version}" in err and "re-export" in err


def _leaves(d, path=()):
    """Every (path, value) leaf of a JSON tree (a dict or list is a leaf too when empty)."""
    if isinstance(d, dict) and d:
        for k, v in d.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list) and d:
        for i, v in enumerate(d):
            yield from _leaves(v, path + (i,))
    else:
        yield path, d


def _changed(value, salt: int):
    """A different value of the same JSON kind (or another kind, for None and empty containers)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 + salt
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x" if salt % 2 else ""
    if isinstance(value, list):
        return ["x"]
    if isinstance(value, dict):
        return {"x": 1}
    return "x"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(min_value=0), salt=st.integers(0, 3), reseal=st.booleans())
def test_any_single_field_edit_is_refused_with_one_line(nir_bundle, tmp_path_factory, capsys, pick, salt, reseal):
    """Property: change one leaf of manifest.json (any field, at any depth). Without resealing, verify always
    refuses it (exit 2, one line). With the integrity digest recomputed, every field that states what the
    bundle computes or where it comes from is still refused; only ``created_by`` (free text) may be edited."""
    d0 = json.loads((nir_bundle / MANIFEST_NAME).read_text())
    leaves = [(p, v) for p, v in _leaves(d0) if p[0] != "integrity"]
    where, value = leaves[pick % len(leaves)]

    def edit(d):
        node = d
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = _changed(value, salt)

    path = _edited_copy(nir_bundle, tmp_path_factory.mktemp("prop") / "b", edit, reseal)
    code, err = _verify(path, capsys)
    assert "Traceback" not in err
    if reseal and where[0] == "created_by":
        assert code in (0, 1)
        return
    assert code == 2, (where, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("target,edit", [
    ("onnx", lambda d: d["discretization"].__setitem__("opset", 13)),
    ("onnx", lambda d: d["plan"]["operations"].pop()),
    ("lava", lambda d: d["approximations"].pop()),
    ("lava", lambda d: _plan_node(d, "local_path.lif").__setitem__("tau", _plan_node(d, "local_path.lif")["tau"] + 1)),
], ids=["onnx-discretization", "onnx-coverage", "lava-approximations", "lava-plan-neuron"])
def test_every_target_refuses_a_resealed_edit(tiny_ckpt, tmp_path, capsys, target, edit):
    """ONNX and Lava bundles are re-derived by their own verifiers, like NIR ones (before any runtime starts)."""
    path, _, _ = export_checkpoint(tiny_ckpt, target, tmp_path / "orig")
    code, err = _verify(_edited_copy(path, tmp_path / "b", edit, reseal=True), capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
