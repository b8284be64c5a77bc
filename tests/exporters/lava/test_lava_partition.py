"""Partitioning SVFormer into netx chains: folded float layers reproduce the model's spikes exactly;
what netx cannot express is refused by name; the quantised model uses the emulation at every partition."""

import pytest
import torch
import torch.nn.functional as F

from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.lava.emulate import emulate_partition
from svformer_deploy.exporters.lava.hybrid import quantized_partitions_active
from svformer_deploy.exporters.lava.partition import neuron_assignment, partition_model, quantize_partition
from svformer_deploy.models import create_model, record_spikes
from svformer_deploy.models.neurons import plif_multistep
from tests.exporters.conftest import active_model, clips

TINY_PARTITIONS = [  # <source neuron>><last neuron>, in the plan's order of their source neurons
    "blocks1.0.mlp.lif1>blocks1.0.mlp.lif2", "patch_embed2.lif>blocks2.0.lif", "blocks2.0.mlp.lif1>blocks2.0.mlp.lif2",
    "patch_embed3.lif>head.lif", "patch_embed3.lif>blocks3.0.attn.lif_in",
    *(f"blocks{s}.0.attn.lif_in>blocks{s}.0.attn.lif_{w}" for s in (3,) for w in "qkv"),
    "blocks3.0.mlp.lif1>blocks3.0.mlp.lif2", "patch_embed4.lif>blocks4.0.attn.lif_in",
    *(f"blocks4.0.attn.lif_in>blocks4.0.attn.lif_{w}" for w in "qkv"), "blocks4.0.mlp.lif1>blocks4.0.mlp.lif2"]
LOCAL_PATH = "patch_embed3.lif>head.lif"


@pytest.fixture(scope="module")
def recorded():
    model = active_model()
    with torch.no_grad(), record_spikes(model) as rec:
        model(clips(2))
    return model, rec.spikes


def test_partitions_of_svformer_tiny(recorded):
    model, _ = recorded
    parts = partition_model(model)
    assert [p.name for p in parts] == TINY_PARTITIONS
    lp = parts[TINY_PARTITIONS.index(LOCAL_PATH)]
    assert [l.name for l in lp.layers] == ["patch_embed3.conv", "local_path.dwconv*local_path.pwconv"]
    assert [t.neuron for t in lp.taps] == ["local_path.lif", "head.lif"] and lp.taps[1].channels == (0, 128)
    assign = neuron_assignment(model, parts)
    assert assign["blocks1.0.lif"] == "host" and assign["blocks3.0.attn.lif_proj"] == "host"
    assert assign["blocks3.0.attn.lif_k"] == "lava:blocks3.0.attn.lif_in>blocks3.0.attn.lif_k"
    assert sum(v.startswith("lava:") for v in assign.values()) == 15  # 14 partitions, local_path has 2 neurons


def test_folded_float_layers_reproduce_the_model_spikes(recorded):
    """BN folding, the dw*pw composition, token layouts and channel slices are exact: same spikes as the model."""
    model, spikes = recorded
    mods = dict(model.named_modules())
    for part in partition_model(model):
        s = part.source.to_chw(spikes[part.source.neuron])
        for layer, tap in zip(part.layers, part.taps):
            T, B = s.shape[:2]
            z = F.conv2d(s.flatten(0, 1).double(), torch.from_numpy(layer.weight), torch.from_numpy(layer.bias),
                         layer.stride, layer.padding, 1, layer.groups).float()
            out = plif_multistep(z.reshape(T, B, *z.shape[1:]), mods[tap.neuron].w)
            ref = tap.to_chw(spikes[tap.neuron])
            assert 0 < ref.mean() < 1, tap.neuron
            # float folding rounds differently from the model's conv-then-BN: allow rare flips at exact ties only
            assert (out != ref).float().mean() < 1e-3, (part.name, tap.neuron)
            s = ref


def test_quantized_model_uses_the_emulation(recorded):
    model, spikes = recorded
    parts = [quantize_partition(p) for p in partition_model(model)]
    x = clips(2)
    with torch.no_grad(), quantized_partitions_active(model, parts), record_spikes(model) as rec:
        model(x)
    for p in parts:
        src = p.source.to_chw(rec.spikes[p.source.neuron])
        assert torch.equal(p.output.to_chw(rec.spikes[p.output.neuron]).to(torch.int8), emulate_partition(p.layers, src))
    with torch.no_grad(), record_spikes(model) as again:  # hooks are gone afterwards
        model(x)
    assert all(torch.equal(again.spikes[k], spikes[k]) for k in spikes)


def test_per_timestep_bn_is_refused_by_name():
    model = create_model("svformer_tiny", bn="per_timestep").eval()
    with pytest.raises(UnsupportedLayerError, match=r"patch_embed1\.bn .*per_timestep.*bn='shared'"):
        partition_model(model)
    assert len(partition_model(model, approximate_bn=True)) == len(TINY_PARTITIONS)


def test_ann_twin_is_refused():
    with pytest.raises(UnsupportedLayerError, match="blocks1.0.lif"):
        partition_model(create_model("svformer_tiny", neuron="relu").eval())
