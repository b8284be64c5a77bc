"""Contract tests over the model registry (timm's tests/test_models.py style): every name ``list_models()``
returns must build, run forward and backward, and record spikes. Names come from the registry, never from this
file, so a broken registration fails here.

Cost on 2 CPU cores: each config is built once at its registered size (construction and parameter count only),
and run at ``img_size=32, num_frames=2`` (the smallest the config allows: patch embedding downsamples by 32),
which keeps every layer, width and depth of the registered config (the paper's model included) and only shrinks
the clip."""

from __future__ import annotations

import pytest
import torch

from svformer_deploy.models import SpikingNeuron, create_model, get_config, list_models, record_spikes

SMALL = {"img_size": 32, "num_frames": 2}
NAMES = list_models()


def test_registry_is_not_empty():
    assert NAMES, "no model is registered"


@pytest.mark.parametrize("name", NAMES)
def test_builds_at_registered_size_with_its_config_inside(name):
    model = create_model(name)
    assert model.config == get_config(name) and model.config.name == name
    assert sum(p.numel() for p in model.parameters()) > 0
    assert any(isinstance(m, SpikingNeuron) for m in model.modules()), "a registered model has no neuron layer"


@pytest.fixture(scope="module", params=NAMES)
def small_model(request):
    torch.manual_seed(0)
    return request.param, create_model(request.param, **SMALL)


def test_forward_backward_every_parameter_gets_a_finite_gradient(small_model):
    name, model = small_model
    model.train().zero_grad()
    x = torch.randn(2, *model.config.input_shape) * 2
    y = model(x)
    assert y.shape == (2, model.config.num_classes) and torch.isfinite(y).all(), name
    y.square().sum().backward()
    bad = [n for n, p in model.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not bad, f"{name}: parameters without a finite gradient: {bad[:5]}"


def test_records_binary_spikes_of_every_neuron_in_time_major_layout(small_model):
    name, model = small_model
    model.eval()
    neurons = [n for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    x = torch.randn(3, *model.config.input_shape) * 2
    with torch.no_grad(), record_spikes(model) as rec:
        model(x)
    assert sorted(rec.spikes) == sorted(neurons), name
    T, modules = model.config.num_frames, dict(model.named_modules())
    for layer, s in rec.spikes.items():
        layout = modules[layer].layout  # declared by the layer: (T, B, C, H, W), (T, B, N, C), (T, B, heads, N, d)
        assert s.shape[:2] == (T, 3) and s.ndim == {"chw": 5, "tokens": 4, "heads": 5}[layout], (layer, s.shape)
        assert torch.isin(s, torch.tensor([0.0, 1.0])).all(), f"{name}: {layer} emits non-binary values"
    rates = rec.firing_rates()
    assert all(torch.isfinite(r).all() for r in rates.values())
