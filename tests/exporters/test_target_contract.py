"""Contract tests over the export-target registry and the host-op registry. Every target ``list_targets()``
returns must export a tiny model through the service layer (``svformer_deploy.api``) into a bundle that its own
verifier passes on real moving-digits clips; a verifier-only target (``export=None``) must verify the bundle of
the target it reads. Every host op that a plan (any registered model, lowered) or a written bundle names must be
in the host-op registry. Names come from the registries, never from this file."""

from __future__ import annotations

import pytest
import torch

from svformer_deploy import api
from svformer_deploy.exporters import get_exporter, list_targets, read_bundle
from svformer_deploy.exporters.host_ops import HOST_OPS
from svformer_deploy.exporters.plan import HostOp, lower
from svformer_deploy.models import create_model, list_models, save_checkpoint

from .conftest import active_model

TARGETS = list_targets()
TINY = {"img_size": 32, "num_frames": 4}
"""The contract model: svformer_tiny with active BatchNorm statistics and firing neurons, at 32x32, T=4."""


@pytest.fixture(scope="module")
def contract_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "tiny.pt"
    save_checkpoint(path, active_model(3, **TINY), class_names=[f"digit {i}" for i in range(10)])
    return path


@pytest.fixture(scope="module")
def bundles(contract_ckpt, tmp_path_factory):
    """Bundles written by the export targets on demand, one per target (shared by the verifier-only targets)."""
    root, written = tmp_path_factory.mktemp("bundles"), {}

    def bundle_of(target: str):
        if target not in written:
            written[target] = api.export_and_verify(contract_ckpt, target, root / target, num_videos=2)
        return written[target]

    return bundle_of


def test_every_target_is_loadable_and_described():
    assert TARGETS, "no export target is registered"
    for name in TARGETS:
        exp = get_exporter(name)
        assert exp.name == name and exp.description and callable(exp.verify) and callable(exp.format_report)
        assert exp.export is None or callable(exp.graph), f"{name} writes bundles but cannot derive their graph"
        assert exp.export is not None or get_exporter(exp.bundle_target).export is not None, \
            f"verifier-only target {name!r} reads '{exp.bundle_target}', which cannot export"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_target_exports_and_verifies_a_tiny_model(target, bundles, contract_ckpt):
    torch.set_num_threads(1)
    exp = get_exporter(target)
    if exp.export is not None:
        result = bundles(target)
    else:  # a second runtime of another target's bundle, through the same report
        path = bundles(exp.bundle_target).path
        result = api.verify(path, target=target, checkpoint=contract_ckpt, num_videos=2)
    manifest = read_bundle(result.path)
    assert manifest.target == exp.bundle_target
    assert result.report_path.is_file() and result.summary
    assert result.passed is True, f"{target}: verification missed its goal:\n{result.summary}"
    unknown = [h.op for h in manifest.host_ops if h.op not in HOST_OPS]
    assert not unknown, f"{target} bundle names unregistered host ops {unknown}"


def test_every_registered_host_op_is_callable():
    assert HOST_OPS and all(callable(fn) for fn in HOST_OPS.values())


@pytest.mark.parametrize("name", list_models())
def test_every_host_op_a_plan_names_is_registered(name):
    model = create_model(name, **TINY).eval()
    plan = lower(model, with_params=False)
    ops = {n.op for n in plan.nodes if isinstance(n, HostOp)}
    assert ops, f"{name}: the plan declares no host op (attention, head)"
    assert ops <= set(HOST_OPS), f"{name}: plan names unregistered host ops {sorted(ops - set(HOST_OPS))}"


GRAPH_FIELDS = {"signals", "partitions", "host_ops", "schedule", "graph_input", "graph_output"}


@pytest.mark.parametrize("target", [t for t in TARGETS if get_exporter(t).export is not None])
def test_a_bundle_stores_the_plan_once_and_its_graph_is_derived(target, contract_ckpt, tmp_path):
    """Bundle format 3: manifest.json holds the plan and no graph; reading derives the graph with the target's
    ``graph`` function from that plan, and its partitions name exactly the files the bundle holds."""
    import json

    from svformer_deploy.exporters import export_checkpoint
    from svformer_deploy.exporters.bundle import HOST_PARAMS_NAME, MANIFEST_NAME
    from svformer_deploy.exporters.plan import Plan

    path, model, _ = export_checkpoint(contract_ckpt, target, tmp_path / "b")
    stored = json.loads((path / MANIFEST_NAME).read_text())
    assert not GRAPH_FIELDS & set(stored) and stored["format_version"] == 3
    m = read_bundle(path)
    assert m.graph == get_exporter(target).graph(Plan.from_dict(stored["plan"]), stored["config"])
    on_disk = {p.name for p in path.iterdir()} - {MANIFEST_NAME, HOST_PARAMS_NAME}
    assert {p.file for p in m.partitions} <= on_disk and {p.file for p in m.partitions} <= set(m.files)
    assert m.signals[m.graph_input].shape == model.config.input_shape[:1] + model.config.input_shape[2:]


@pytest.mark.parametrize("name", list_models())
def test_the_graph_derived_from_a_stored_plan_is_the_one_the_files_are_written_from(name):
    """What the partition files are built from (the plan with its weights) and what a reader derives from the
    stored plan (structure only, through JSON) give the same graph, for every registered model: NIR's lowering
    with and without nodes, Lava's chains with and without weights."""
    from svformer_deploy.exporters.lava.partition import partition_plan, plan_chains
    from svformer_deploy.exporters.nir.lowering import lower_plan, nir_graph
    from svformer_deploy.exporters.plan import Plan

    model = create_model(name, **TINY).eval()
    plan = lower(model, approximate_bn=True)
    stored = Plan.from_dict(plan.to_dict())
    cfg = model.config.to_dict()
    assert nir_graph(stored, cfg) == lower_plan(plan, cfg).graph
    assert [(c.name, c.source, c.taps, tuple(l.sources for l in c.layers)) for c in plan_chains(stored)] == \
        [(p.name, p.source, p.taps, tuple(l.sources for l in p.layers)) for p in partition_plan(plan)]
