import torch

from svformer_deploy.models import create_model, iter_neurons, record_spikes


def test_records_every_neuron_in_execution_order_with_time_major_shapes():
    m = create_model("svformer_tiny").eval()
    x = torch.randn(2, *m.config.input_shape) * 3
    with torch.no_grad(), record_spikes(m) as rec:
        m(x)
    names = [n for n, _ in iter_neurons(m)]
    assert sorted(rec.spikes) == sorted(names) and len(names) == 25
    order = list(rec.spikes)
    assert order[0] == "blocks1.0.lif" and order[-1] == "head.lif"
    assert order.index("local_path.lif") < order.index("blocks3.0.attn.lif_in")  # local path taps the stage-3 input
    T = m.config.num_frames
    for name, s in rec.spikes.items():
        assert s.shape[:2] == (T, 2), name
        assert set(s.unique().tolist()) <= {0.0, 1.0}, name
    assert rec.spikes["blocks3.0.attn.lif_q"].shape == (T, 2, 3, 16, 32)  # (T, B, heads, N = 4x4 tokens, d)
    rates = rec.firing_rates()
    assert rates["blocks1.0.lif"].shape == (T,)


def test_hooks_are_removed_after_the_block_even_on_error():
    m = create_model("svformer_tiny").eval()
    try:
        with record_spikes(m):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(not mod._forward_hooks for _, mod in iter_neurons(m))
