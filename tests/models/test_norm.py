import torch

from svformer_deploy.models import TemporalBatchNorm


def _randomized(bn: TemporalBatchNorm) -> TemporalBatchNorm:
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn.eval()


def test_per_timestep_uses_index_t_times_C_plus_c():
    T, C = 3, 4
    bn = _randomized(TemporalBatchNorm(C, T, "per_timestep"))
    x = torch.randn(T, 2, C, 5, 5)
    y = bn(x)
    t, c = 2, 1
    i = t * C + c
    expect = (x[t, :, c] - bn.running_mean[i]) / torch.sqrt(bn.running_var[i] + bn.eps) * bn.weight[i] + bn.bias[i]
    assert torch.allclose(y[t, :, c], expect, atol=1e-6)


def test_channels_last_tokens_match_channel_first():
    T, C = 2, 6
    a = _randomized(TemporalBatchNorm(C, T, "per_timestep", channels_last=True))
    b = TemporalBatchNorm(C, T, "per_timestep")
    b.load_state_dict(a.state_dict())
    b.eval()
    x = torch.randn(T, 3, 7, C)  # (T, B, N, C)
    assert torch.allclose(a(x), b(x.transpose(2, 3)).transpose(2, 3), atol=1e-6)


def test_affine_equals_eval_forward_both_modes():
    for mode in ("shared", "per_timestep"):
        bn = _randomized(TemporalBatchNorm(4, 3, mode))
        x = torch.randn(3, 2, 4, 2, 2)
        scale, shift = bn.affine()
        if mode == "shared":
            scale, shift = scale.expand(3, 4), shift.expand(3, 4)
        expect = x * scale[:, None, :, None, None] + shift[:, None, :, None, None]
        assert torch.allclose(bn(x), expect, atol=1e-6)


def test_shared_statistics_are_pooled_over_time_in_training():
    bn = TemporalBatchNorm(2, 4, "shared").train()
    x = torch.randn(4, 8, 2, 3, 3) + torch.arange(4.0)[:, None, None, None, None]
    y = bn(x)
    assert torch.allclose(y.transpose(0, 2).reshape(2, -1).mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(bn.running_mean, 0.1 * x.transpose(0, 2).reshape(2, -1).mean(1), atol=1e-5)
