"""Our SVFormer vs an independent, literal composition of spikingjelly 0.0.0.0.14 layers (the official structure)."""

import torch
from spikingjelly.activation_based import functional

from svformer_deploy.models import create_model, record_spikes
from svformer_deploy.models.official import official_to_ours
from tests.models.reference_svformer import ReferenceSVFormer, randomize_

SMALL = dict(embed_dim=(32, 64, 96, 128), depth=(1, 1, 2, 1), head_dim=32, mlp_ratio=2, num_classes=7, img_size=64, T=4)


def _pair(spec: dict, seed: int = 0):
    ref = randomize_(ReferenceSVFormer(**spec), seed)
    ours = create_model("svformer_ucf101", embed_dims=spec["embed_dim"], depths=spec["depth"],
                        head_dim=spec["head_dim"], mlp_ratio=float(spec["mlp_ratio"]), num_classes=spec["num_classes"],
                        img_size=spec["img_size"], num_frames=spec["T"], bn="per_timestep", drop_path_rate=0.0)
    ours.load_state_dict({official_to_ours(k): v for k, v in ref.state_dict().items()})
    return ref, ours


def test_eval_logits_equal_reference_and_neurons_really_fire():
    ref, ours = _pair(SMALL)
    ref.eval(), ours.eval()
    x = torch.randn(3, 3, SMALL["T"], 64, 64) * 2
    with torch.no_grad():
        expected = ref(x)
        with record_spikes(ours) as rec:
            got = ours(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
    rates = torch.stack([r.mean() for r in rec.firing_rates().values()])
    # a comparison of silent (or saturated) networks would prove nothing
    assert (rates > 0.005).float().mean() > 0.75 and (rates < 0.95).all() and rates.mean() > 0.05


def test_train_mode_forward_and_gradients_match_reference():
    # float64, so that gradients that are exactly zero (a bias followed by train-mode BN) are ~1e-15 noise in both
    ref, ours = _pair(SMALL, seed=1)
    ref.double().train(), ours.double().train()
    x = torch.randn(2, 3, SMALL["T"], 64, 64, dtype=torch.float64) * 2
    target = torch.tensor([1, 4])
    loss_ref = torch.nn.functional.cross_entropy(ref(x), target)
    loss_ours = torch.nn.functional.cross_entropy(ours(x), target)
    assert torch.allclose(loss_ours, loss_ref, rtol=1e-12)
    loss_ref.backward(), loss_ours.backward()
    ref_grads = {official_to_ours(k): p.grad for k, p in ref.named_parameters()}
    scale = max(p.grad.norm().item() for p in ours.parameters())
    nonzero = 0
    for name, p in ours.named_parameters():
        g, g_ref = p.grad, ref_grads[name]
        assert g is not None, name
        # our hand-written BPTT sums in another order than autograd: equal up to rounding
        assert (g - g_ref).norm() <= 1e-8 * g_ref.norm() + 1e-12 * scale, (name, (g - g_ref).norm().item())
        nonzero += bool(g_ref.norm() > 1e-9 * scale)
    assert nonzero > 0.7 * len(ref_grads)  # most parameters really receive gradient (biases before BN get 0)
    # running statistics were updated identically
    ref_bufs = {official_to_ours(k): b for k, b in ref.named_buffers()}
    for name, b in ours.named_buffers():
        assert torch.allclose(b.double(), ref_bufs[name].double(), rtol=1e-12), name


def test_paper_model_matches_reference_at_full_size():
    spec = dict(embed_dim=(128, 256, 384, 512), depth=(1, 1, 3, 1), head_dim=64, mlp_ratio=2, num_classes=101,
                img_size=224, T=16)
    ref, ours = _pair(spec, seed=2)
    assert sum(p.numel() for p in ref.parameters()) == 13_801_612
    ref.eval(), ours.eval()
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        functional.reset_net(ref)
        got = ours(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
