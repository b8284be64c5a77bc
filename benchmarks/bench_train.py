"""Training throughput on CPU: clips per second of full training steps (forward, backward, AdamW step).

Measures ``svformer_tiny`` (the registered config, 64x64, T=8; and at 32x32 as the shipped checkpoint) and
``svformer_ucf101`` (the paper model, 224x224, T=16) in the same run and prints the ratios to the paper model. Inputs are random clips of the right shape (data loading and
decoding are not part of the figure); the first step of each model is a warm-up and is not timed.

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from svformer_deploy.models import create_model
from svformer_deploy.training import param_groups


def clips_per_second(name: str, batch: int, steps: int, **overrides) -> dict:
    """Time ``steps`` training steps (after one warm-up step) of model ``name`` at ``batch`` clips per step."""
    torch.manual_seed(0)
    model = create_model(name, **overrides).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    x = torch.randn(batch, *model.config.input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"model": name, "batch": batch, "steps": steps, "input": tuple(x.shape), "wall_s": wall, "cpu_s": cpu,
            "clips_per_s": batch * steps / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny-batch", type=int, default=32)
    ap.add_argument("--tiny-steps", type=int, default=10)
    ap.add_argument("--ucf-batch", type=int, default=2, help="at least 2: the head BatchNorm3d needs 2 clips")
    ap.add_argument("--ucf-steps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [clips_per_second("svformer_tiny", args.tiny_batch, args.tiny_steps),
            clips_per_second("svformer_tiny", args.tiny_batch, args.tiny_steps, img_size=32),
            clips_per_second("svformer_ucf101", args.ucf_batch, args.ucf_steps)]
    print(f"training throughput on CPU, {args.threads} thread(s), torch {torch.__version__}")
    for r in rows:
        print(f"  {r['model']:16s} input {r['input']}  {r['steps']} steps  wall {r['wall_s']:.2f} s  cpu {r['cpu_s']:.2f} s"
              f"  -> {r['clips_per_s']:.2f} clips/s")
    base = rows[-1]["clips_per_s"]
    for r in rows[:-1]:
        print(f"ratio {r['model']} {r['input'][-1]}x{r['input'][-1]} / svformer_ucf101: {r['clips_per_s'] / base:.1f}x")


if __name__ == "__main__":
    main()
