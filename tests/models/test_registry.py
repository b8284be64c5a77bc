import pytest
import torch

from svformer_deploy.errors import ConfigError, InputShapeError, UnknownModelError
from svformer_deploy.models import SVFormerConfig, create_model, get_config, list_models


def test_registered_names():
    assert {"svformer_ucf101", "svformer_tiny", "svformer_small"} <= set(list_models())


def test_paper_model_has_reference_parameter_count_and_layout():
    m = create_model("svformer_ucf101")
    assert sum(p.numel() for p in m.parameters()) == 13_801_612
    c = m.config
    assert (c.embed_dims, c.depths, c.head_dim, c.num_heads, c.mlp_ratio) == ((128, 256, 384, 512), (1, 1, 3, 1), 64,
                                                                              (2, 4, 6, 8), 2.0)
    assert (c.num_frames, c.img_size, c.num_classes, c.bn) == (16, 224, 101, "per_timestep")
    assert m.blocks3[0].attn.product.scale == 0.125
    assert m.head.conv3d.kernel_size == (16, 7, 7) and m.head.conv3d.groups == 512


def test_unknown_name_and_override_are_errors():
    with pytest.raises(UnknownModelError, match="svformer_tiny"):
        create_model("svformer_huge")
    with pytest.raises(ConfigError, match="unknown config key"):
        create_model("svformer_tiny", widths=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_model("svformer_tiny", img_size=50)


def test_config_is_frozen_and_roundtrips():
    c = get_config("svformer_tiny", num_classes=3)
    with pytest.raises(Exception):
        c.num_classes = 4  # type: ignore[misc]
    assert SVFormerConfig.from_dict(c.to_dict()) == c


def test_ann_twin_has_same_parameters_minus_neurons():
    snn, ann = create_model("svformer_tiny"), create_model("svformer_tiny", neuron="relu")
    n_w = sum(1 for n, _ in snn.named_parameters() if n.endswith(".w"))
    assert sum(p.numel() for p in snn.parameters()) - n_w == sum(p.numel() for p in ann.parameters())


def test_wrong_input_shape_names_expected_shape():
    m = create_model("svformer_tiny")
    with pytest.raises(InputShapeError, match=r"\(B, 3, 8, 64, 64\)"):
        m(torch.zeros(1, 3, 8, 32, 32))


def test_per_timestep_bn_refuses_other_T():
    m = create_model("svformer_tiny", bn="per_timestep").eval()
    with pytest.raises(InputShapeError, match="T=8"):
        m.forward_features(torch.zeros(4, 1, 3, 64, 64))
