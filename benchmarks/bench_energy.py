"""Counting speed: one counting pass vs a plain forward of the same model and input, and vs NeuroBench 2.3's
SynapticOperations (hooks + binary re-runs of every layer) on the same model, in one run. Prints ratios.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_energy.py [--model svformer_tiny] [--batch 2]

NeuroBench sees only nn.Conv*/nn.Linear (not the attention matmuls), so its numbers are not equal to ours;
only the time is compared. Goal: counting <= 1.5x a plain forward, >= 5x faster than NeuroBench.
"""

from __future__ import annotations

import argparse

import torch

from _timing import best_of


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="svformer_tiny")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import TorchModel

    from svformer_deploy.energy import count_ops
    from svformer_deploy.models import create_model

    torch.manual_seed(0)
    model = create_model(a.model).eval()
    x = torch.randn(a.batch, *model.config.input_shape)

    def plain():
        with torch.no_grad():
            model(x)

    def ours():
        count_ops(model, x)

    def neurobench():
        nb = TorchModel(model)
        nb.register_hooks()
        m = SynapticOperations()
        with torch.no_grad():
            preds = nb(x)
        m(nb, preds, (x, torch.zeros(a.batch)))
        nb.cleanup_hooks()

    plain()
    ours()  # the first TorchDispatchMode use in a process imports torch._dynamo (seconds, once): not timed
    t_plain = best_of(plain, a.repeat)
    t_ours = best_of(ours, a.repeat)
    t_nb = best_of(neurobench, a.repeat)
    print(f"model {a.model}, batch {a.batch}, threads {torch.get_num_threads()}, best of {a.repeat}")
    print(f"plain forward        {t_plain:8.3f} s")
    print(f"count_ops            {t_ours:8.3f} s   ratio to forward {t_ours / t_plain:5.2f}x (goal <= 1.5x)")
    print(f"NeuroBench SynOps    {t_nb:8.3f} s   NeuroBench / ours {t_nb / t_ours:5.2f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
