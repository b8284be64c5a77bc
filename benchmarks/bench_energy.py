"""Counting speed: ``count_ops`` vs a plain forward of the same model and input, and vs NeuroBench 2.3's
SynapticOperations (hooks + binary re-runs of every layer) on the same model and clips, in one run, for every
registered config (or those named). Prints ratios against the baselines measured in the same run, by CPU time of
this process (robust on a shared machine) and by wall time.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_energy.py [--model svformer_tiny ...] [--batch 2]

``count_ops`` runs the model once under its dispatch mode and module hooks (every count is a full count; see
:mod:`svformer_deploy.energy.counter`) and returns the counts as arrays; its two pandas tables (``.df``,
``.memory``) are made on first access. The count is also timed with both tables made, and printed beside it.

NeuroBench: wrap the model, register the hooks, run it, apply the metric, clean up. Its ``SynapticOperations``
removes the layer hooks it read (``hook.hook.remove()``), so counting each further batch takes registering them
again: its per-batch cost is this whole sequence.

The timed calls are interleaved (one of each per round, best of ``--repeat`` rounds), so a burst of load
elsewhere on the machine hits all of them alike. NeuroBench sees only nn.Conv*/nn.Linear (not the attention
matmuls), so its numbers are not equal to ours; only the time is compared. Targets: counting <= 1.2x a plain
forward on svformer_ucf101 (where a count costs seconds; the toy configs' figures are printed too), >= 5x faster
than NeuroBench. Also printed: NeuroBench / plain forward, the ceiling of the NeuroBench ratio for any counter
that runs the model once.
"""

from __future__ import annotations

import argparse
import time

import torch


def bench(name: str, batch: int, repeat: int) -> None:
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import TorchModel

    from svformer_deploy.energy import count_ops
    from svformer_deploy.models import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(batch, *model.config.input_shape)
    target = torch.zeros(batch)

    def plain():
        with torch.no_grad():
            model(x)

    def ours():
        count_ops(model, x)

    def ours_tables():
        c = count_ops(model, x)
        c.df, c.memory  # noqa: B018  (the tables are made on first access)

    def neurobench():
        nb = TorchModel(model)
        nb.register_hooks()
        with torch.no_grad():
            preds = nb(x)
        SynapticOperations()(nb, preds, (x, target))
        nb.cleanup_hooks()

    runs = {"plain": plain, "ours": ours, "ours_tables": ours_tables, "neurobench": neurobench}
    plain()
    ours()  # the first dispatch mode of a process imports torch._dynamo (seconds, once): not timed
    neurobench()
    best = {label: dict.fromkeys(runs, float("inf")) for label in ("CPU time", "wall time")}
    for _ in range(repeat):
        for k, fn in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            c1, w1 = time.process_time(), time.perf_counter()
            best["CPU time"][k] = min(best["CPU time"][k], c1 - c0)
            best["wall time"][k] = min(best["wall time"][k], w1 - w0)
    print(f"{name:16s} batch {batch}, input {'x'.join(map(str, model.config.input_shape))}, threads "
          f"{torch.get_num_threads()}, best of {repeat}")
    for label, t in best.items():
        p, nb = t["plain"], t["neurobench"]
        print(f"  [{label}]  plain forward {p * 1e3:.1f} ms; NeuroBench {nb * 1e3:.1f} ms = {nb / p:4.2f}x forward "
              "(the most NeuroBench / ours can be for a counter that runs the model once)")
        ours = t["ours"]
        print(f"  count_ops {ours * 1e3:7.1f} ms = {ours / p:4.2f}x forward (<= 1.2x: "
              f"{'met' if ours <= 1.2 * p else 'NOT met'}); NeuroBench / ours {nb / ours:4.2f}x (>= 5x: "
              f"{'met' if nb >= 5 * ours else 'NOT met'})")
        tables = t["ours_tables"]
        print(f"  count_ops and its two pandas tables {tables * 1e3:7.1f} ms = {tables / p:4.2f}x forward; "
              f"NeuroBench / that {nb / tables:4.2f}x")


def main() -> None:
    from svformer_deploy.models import list_models

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", help="registered config (repeatable; default: every one)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, help="rounds (default: 7, and 3 for svformer_ucf101)")
    a = ap.parse_args()
    for name in a.model or list_models():
        big = name == "svformer_ucf101"
        bench(name, 1 if big else a.batch, a.repeat or (3 if big else 7))


if __name__ == "__main__":
    main()
