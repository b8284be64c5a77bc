"""Contract tests over the export-target registry and the host-op registry. Every target ``list_targets()``
returns must export a tiny model through the service layer (``svformer_deploy.api``) into a bundle that its own
verifier passes on real moving-digits clips; a verifier-only target (``export=None``) must verify the bundle of
the target it reads. Every host op that a plan (any registered model, lowered) or a written bundle names must be
in the host-op registry. Names come from the registries, never from this file."""

from __future__ import annotations

import pytest
import torch

from svformer_deploy import api
from svformer_deploy.exporters import get_exporter, list_targets
from svformer_deploy.exporters.bundle import read_manifest
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
    manifest = read_manifest(result.path)
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
