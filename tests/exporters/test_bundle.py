"""The bundle directory format: atomic writes, refusal to overwrite, manifest round trip and validation."""

import json

import pytest

from svformer_deploy._outputs import MARKER
from svformer_deploy.errors import BundleFormatError, OutputExistsError
from svformer_deploy.exporters.plan import HostOp, Input, Neuron, Plan
from svformer_deploy.exporters.bundle import (
    MANIFEST_NAME, HostOpSpec, Manifest, PartitionSpec, Signal, check_bundle_files, read_manifest, write_bundle)


def _manifest() -> Manifest:
    return Manifest(
        target="nir", model_name="m", config={"name": "m"}, checkpoint_sha256="ab" * 32, dt=1e-4,
        discretization={"neuron": "LIF"},
        signals={"x": Signal("x", (3, 4, 4), "analog"), "s": Signal("s", (3, 4, 4), "spikes"),
                 "y": Signal("y", (2,), "logits", time="per_clip", layout="K")},
        partitions=[PartitionSpec("p0", "p0.nir", {"input": "x"}, {"output": "s"}, ["a.lif"], {"lif": ["a.lif"]})],
        host_ops=[HostOpSpec("h", "temporal_head", ["s"], ["y"], ["head"], "y = W s", {"groups": 1}, ["h.w"],
                             "per_clip")],
        schedule=[{"partition": "p0"}, {"host_op": "h"}], graph_input="x", graph_output="y",
        plan=_plan().to_dict(), class_names=["a", "b"])


def _plan() -> Plan:
    return Plan("m", [Input("x", (), (3, 4, 4), ()), Neuron("a.lif", ("x",), (3, 4, 4), ("a.lif",)),
                      HostOp("h", ("a.lif",), (2,), ("head",), op="temporal_head", equation="y = W s",
                             output_kind="logits", output_time="per_clip", layout="K")],
                "h", ["a.lif", "head"])


def test_round_trip_and_hashes(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {"p0.nir": lambda p: p.write_bytes(b"abc")})
    m = read_manifest(out)
    assert m.signals["x"].shape == (3, 4, 4) and m.partitions[0].inputs == {"input": "x"}
    assert m.host_ops[0].time == "per_clip" and m.class_names == ["a", "b"]
    assert m.files == {"p0.nir": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}  # sha256("abc")
    check_bundle_files(out, m)
    (out / "p0.nir").write_bytes(b"abd")
    with pytest.raises(BundleFormatError, match="modified after export"):
        check_bundle_files(out, m)


def test_refuses_existing_output_and_force_replaces_only_an_earlier_bundle(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    with pytest.raises(OutputExistsError, match="--force"):
        write_bundle(out, _manifest(), {})
    write_bundle(out, _manifest(), {}, force=True)
    assert read_manifest(out).model_name == "m" and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp dirs left


def test_force_never_replaces_a_users_folder(tmp_path):
    out = tmp_path / "my papers é"
    out.mkdir()
    (out / "thesis.txt").write_text("important")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="did not write .*thesis.txt.*remove that folder yourself"):
            write_bundle(out, _manifest(), {}, force=force)
    assert (out / "thesis.txt").read_text() == "important" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "b"

    def boom(p):
        p.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_bundle(out, _manifest(), {"p0.nir": boom})
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_write_keeps_old_bundle(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    with pytest.raises(RuntimeError):
        write_bundle(out, _manifest(), {"p0.nir": lambda p: (_ for _ in ()).throw(RuntimeError("x"))}, force=True)
    assert read_manifest(out).model_name == "m" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_version_and_format_checked(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    d = json.loads((out / MANIFEST_NAME).read_text())
    d["format_version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(BundleFormatError, match="version 99"):
        read_manifest(out)
    with pytest.raises(BundleFormatError, match="not an export bundle"):
        read_manifest(tmp_path)


def test_manifest_owns_the_coverage_invariant_and_validates_itself():
    m = _manifest()
    assert m.coverage_problems() == [] and m.coverage_problems(["a.lif"]) == ["unknown operation in bundle: head"]
    assert m.operations == ["a.lif", "head"]
    plan = _plan().to_dict()
    plan["operations"].append("b.lif")  # the plan itself refuses an operation no node covers
    with pytest.raises(BundleFormatError, match="plan is invalid .*not exported: b.lif"):
        Manifest(**{**vars(m), "plan": plan})
    plan = _plan().to_dict()
    plan["nodes"][2]["op"] = "readout"  # and a host op nobody registered
    with pytest.raises(BundleFormatError, match="plan is invalid .*host op 'readout'.* not registered"):
        Manifest(**{**vars(m), "plan": plan})
    with pytest.raises(BundleFormatError, match="not exported: head"):  # the steps must cover the plan's operations
        Manifest(**{**vars(m), "host_ops": [HostOpSpec("h", "temporal_head", ["s"], ["y"], ["a.lif"], "y = W s",
                                                       time="per_clip")],
                    "partitions": [PartitionSpec("p0", "p0.nir", {"input": "x"}, {"output": "s"}, [], {})]})
    with pytest.raises(BundleFormatError, match="partition 'nope' is not declared"):
        m.partition("nope")
    with pytest.raises(BundleFormatError, match="host op 'h' names op 'readout', which is not registered"):
        HostOpSpec("h", "readout", ["s"], ["y"], ["head"], "y = W s")
    with pytest.raises(BundleFormatError, match="reads signal 's' before any step produces it"):
        Manifest(**{**vars(m), "schedule": [{"host_op": "h"}, {"partition": "p0"}]})
    with pytest.raises(BundleFormatError, match="3 names for 2 logits"):
        Manifest(**{**vars(m), "class_names": ["a", "b", "c"]})
    with pytest.raises(BundleFormatError, match="shape"):
        Signal("x", (3, 0), "analog", layout="C,H")
