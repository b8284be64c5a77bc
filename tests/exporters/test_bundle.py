"""The bundle directory format: atomic writes, refusal to overwrite, manifest round trip and validation."""

import json

import pytest

from svformer_deploy._outputs import MARKER
from svformer_deploy.errors import BundleFormatError, OutputExistsError
from svformer_deploy.exporters import graph_function, read_bundle
from svformer_deploy.exporters.bundle import (
    MANIFEST_NAME, Graph, HostOpSpec, Manifest, PartitionSpec, Signal, check_bundle_files, manifest_digest,
    read_manifest, write_bundle)
from svformer_deploy.exporters.nir.lowering import nir_graph
from svformer_deploy.exporters.plan import HostOp, Input, Neuron, Plan


def _graph(**changes) -> Graph:
    """What the NIR target derives from :func:`_plan`, by hand (``changes`` replace fields)."""
    fields = dict(
        signals={"x": Signal("x", (3, 4, 4), "analog"), "a.lif": Signal("a.lif", (3, 4, 4), "spikes"),
                 "logits": Signal("logits", (2,), "logits", time="per_clip", layout="K")},
        partitions=[PartitionSpec("partition_0", "partition_0.nir", {"input.x": "x"}, {"output.a.lif": "a.lif"},
                                  ["a.lif"], {"a.lif": ["a.lif"]})],
        host_ops=[HostOpSpec("h", "temporal_head", ["a.lif"], ["logits"], ["head"], "y = W s", {"groups": 1},
                             [], "per_clip")],
        schedule=[{"partition": "partition_0"}, {"host_op": "h"}], graph_input="x", graph_output="logits")
    return Graph(**{**fields, **changes})


def _manifest(**changes) -> Manifest:
    fields = dict(target="nir", model_name="m", config={"name": "m"}, checkpoint_sha256="ab" * 32, dt=1e-4,
                  discretization={"neuron": "LIF"}, plan=_plan(), graph=_graph(), class_names=["a", "b"])
    return Manifest(**{**fields, **changes})


def _plan() -> Plan:
    return Plan("m", [Input("x", (), (3, 4, 4), ()), Neuron("a.lif", ("x",), (3, 4, 4), ("a.lif",)),
                      HostOp("h", ("a.lif",), (2,), ("head",), op="temporal_head", equation="y = W s",
                             attrs={"groups": 1}, output_kind="logits", output_time="per_clip", layout="K")],
                "h", ["a.lif", "head"])


def test_the_targets_graph_of_the_plan_is_the_one_written_by_hand():
    assert nir_graph(_plan(), {"name": "m"}) == _graph()


def test_round_trip_and_hashes(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {"partition_0.nir": lambda p: p.write_bytes(b"abc")})
    stored = json.loads((out / MANIFEST_NAME).read_text())
    assert not {"signals", "partitions", "host_ops", "schedule", "graph_input", "graph_output"} & set(stored)
    m = read_manifest(out, graph_function)
    assert m.graph == _graph() and m == _manifest(files=m.files, integrity=m.integrity)
    assert m.signals["x"].shape == (3, 4, 4) and m.partitions[0].inputs == {"input.x": "x"}
    assert m.host_ops[0].time == "per_clip" and m.class_names == ["a", "b"]
    assert m.files == {"partition_0.nir": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}  # sha256("abc")
    check_bundle_files(out, m)
    (out / "partition_0.nir").write_bytes(b"abd")
    with pytest.raises(BundleFormatError, match="modified after export"):
        check_bundle_files(out, m)


def test_refuses_existing_output_and_force_replaces_only_an_earlier_bundle(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    with pytest.raises(OutputExistsError, match="--force"):
        write_bundle(out, _manifest(), {})
    write_bundle(out, _manifest(), {}, force=True)
    assert read_bundle(out).model_name == "m" and (out / MARKER).is_file()
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
        write_bundle(out, _manifest(), {"partition_0.nir": boom})
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_write_keeps_old_bundle(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    with pytest.raises(RuntimeError):
        write_bundle(out, _manifest(), {"partition_0.nir": lambda p: (_ for _ in ()).throw(RuntimeError("x"))},
                     force=True)
    assert read_bundle(out).model_name == "m" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_version_and_format_checked(tmp_path):
    out = tmp_path / "my bundle"
    write_bundle(out, _manifest(checkpoint_path="runs/my run/best.pt"), {})
    d = json.loads((out / MANIFEST_NAME).read_text())
    d["format_version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(d))
    # the fix is the export command for the checkpoint and target the manifest records, quoted for a shell
    with pytest.raises(BundleFormatError) as err:
        read_bundle(out)
    assert str(err.value) == (f"{out} has bundle format version 99; this svformer-deploy reads version 3 only: "
                              "re-export it from its checkpoint: `svformer-deploy export 'runs/my run/best.pt' --to "
                              f"nir --out '{out}' --force`")
    for value, what in (("3", "has format_version '3', not a whole number"), (True, "format_version True"),
                        (None, "has format_version None")):
        (out / MANIFEST_NAME).write_text(json.dumps({**d, "format_version": value}))
        with pytest.raises(BundleFormatError, match=what):
            read_bundle(out)
    (out / MANIFEST_NAME).write_text(json.dumps({k: v for k, v in d.items() if k != "format_version"}))
    with pytest.raises(BundleFormatError, match="has no format_version; .*re-export it from its checkpoint"):
        read_bundle(out)
    with pytest.raises(BundleFormatError, match="not an export bundle"):
        read_bundle(tmp_path)


def _resealed(out, edit) -> None:
    d = json.loads((out / MANIFEST_NAME).read_text())
    edit(d)
    d["integrity"] = manifest_digest(d)
    (out / MANIFEST_NAME).write_text(json.dumps(d))


def test_a_stored_graph_or_an_unknown_target_is_refused(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, _manifest(), {})
    _resealed(out, lambda d: d.__setitem__("signals", {}))
    with pytest.raises(BundleFormatError) as err:
        read_bundle(out)
    assert str(err.value) == (f"{out / MANIFEST_NAME}: field(s) ['signals'] are stored, but bundle format 3 derives "
                              "the graph from the plan and never stores it; re-export the bundle with "
                              "`svformer-deploy export` instead of editing it")
    _resealed(out, lambda d: (d.pop("signals"), d.__setitem__("notes", "mine")))
    with pytest.raises(BundleFormatError, match=r"manifest.json: field\(s\) \['notes'\] are not part of bundle "
                                                "format 3"):
        read_bundle(out)
    _resealed(out, lambda d: (d.pop("notes"), d.__setitem__("target", "loihi")))
    with pytest.raises(BundleFormatError, match="written by target 'loihi', which this svformer-deploy does not "
                                                "export .*re-export"):
        read_bundle(out)
    _resealed(out, lambda d: d.__setitem__("target", "nir-norse"))  # a verifier, not a writer: no graph
    with pytest.raises(BundleFormatError, match="'nir-norse', which this svformer-deploy does not export"):
        read_bundle(out)


def test_manifest_owns_the_coverage_invariant_and_validates_itself():
    m = _manifest()
    assert m.coverage_problems() == [] and m.coverage_problems(["a.lif"]) == ["unknown operation in bundle: head"]
    assert m.operations == ["a.lif", "head"]
    stored = m.to_json()  # the plan is read (parsed and checked) once, from the manifest's JSON
    stored["plan"]["operations"].append("b.lif")  # the plan itself refuses an operation no node covers
    with pytest.raises(BundleFormatError, match="plan is invalid .*not exported: b.lif"):
        Manifest.from_json(stored, nir_graph)
    stored = m.to_json()
    stored["plan"]["nodes"][2]["op"] = "readout"  # and a host op nobody registered
    with pytest.raises(BundleFormatError, match="plan is invalid .*host op 'readout'.* not registered"):
        Manifest.from_json(stored, nir_graph)
    stored = m.to_json()
    stored["plan"]["nodes"].insert(1, {**stored["plan"]["nodes"][0], "name": "y"})  # and a second input
    with pytest.raises(BundleFormatError, match="plan is invalid .*2 input nodes"):
        Manifest.from_json(stored, nir_graph)
    assert Manifest.from_json(m.to_json(), nir_graph) == m
    with pytest.raises(BundleFormatError, match="not exported: head"):  # the graph must cover the plan's operations
        _manifest(graph=_graph(host_ops=[HostOpSpec("h", "temporal_head", ["a.lif"], ["logits"], ["a.lif"],
                                                     "y = W s", time="per_clip")],
                               partitions=[PartitionSpec("partition_0", "partition_0.nir", {"input.x": "x"},
                                                         {"output.a.lif": "a.lif"}, [], {})]))
    with pytest.raises(BundleFormatError, match="partition 'nope' is not declared"):
        m.partition("nope")
    with pytest.raises(BundleFormatError, match="host op 'h' names op 'readout', which is not registered"):
        HostOpSpec("h", "readout", ["s"], ["y"], ["head"], "y = W s")
    with pytest.raises(BundleFormatError, match="reads signal 'a.lif' before any step produces it"):
        _graph(schedule=[{"host_op": "h"}, {"partition": "partition_0"}])
    with pytest.raises(BundleFormatError, match="3 names for 2 logits"):
        _manifest(class_names=["a", "b", "c"])
    with pytest.raises(BundleFormatError, match="shape"):
        Signal("x", (3, 0), "analog", layout="C,H")
