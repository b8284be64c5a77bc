"""Training throughput on CPU: clips per second of full training steps (forward, backward, AdamW step).

Measures ``svformer_tiny`` (the registered config, 64x64, T=8; and at 32x32 as the shipped checkpoint) and
``svformer_ucf101`` (the paper model, 224x224, T=16) in the same run and prints the ratios to the paper model.
Inputs are random clips of the right shape (data loading and decoding are not part of the figure); the first
step of each model is a warm-up and is not timed.

Then, unless ``--no-contention``, the CPU-contention check of ``svformer_tiny`` 32x32 (the demo's training):
throughput with the thread policy of ``svformer_deploy._threads`` (the threads the process may use, and the
governor that drops threads while other processes are busy) on the machine as it is ("quiet"), then while one
extra busy process (a Python spin loop) runs, and, for comparison, the same with the thread count fixed as
before the policy. Prints the ratios busy/quiet.

    python benchmarks/bench_train.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from svformer_deploy._threads import ThreadGovernor, usable_cpus
from svformer_deploy.models import create_model
from svformer_deploy.training import param_groups


def clips_per_second(name: str, batch: int, steps: int, governor: ThreadGovernor | None = None,
                     warmup_s: float = 0.0, **overrides) -> dict:
    """Time ``steps`` training steps of model ``name`` at ``batch`` clips per step, after one warm-up step and
    as many more as fill ``warmup_s`` seconds; ``governor.tick()`` runs before every step."""
    torch.manual_seed(0)
    model = create_model(name, **overrides).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    x = torch.randn(batch, *model.config.input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,))

    def step() -> None:
        if governor is not None:
            governor.tick()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup_s:
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"model": name, "batch": batch, "steps": steps, "input": tuple(x.shape), "wall_s": wall, "cpu_s": cpu,
            "clips_per_s": batch * steps / wall, "threads": torch.get_num_threads()}


def contention(threads: int, batch: int, steps: int, repeats: int) -> None:
    """Quiet vs one busy competing process, with the thread policy and with a fixed thread count."""
    import subprocess
    import sys

    def run(policy: bool) -> dict:
        torch.set_num_threads(threads)
        gov = ThreadGovernor(ceiling=threads, interval=1.0) if policy else None
        try:  # 3 s of warm-up: the governor has measured the machine before the timed steps
            return clips_per_second("svformer_tiny", batch, steps, governor=gov, warmup_s=3.0, img_size=32)
        finally:
            torch.set_num_threads(threads)

    print(f"CPU contention, svformer_tiny 32x32 batch {batch}, {steps} steps, best of {repeats}, "
          f"{threads} thread(s) at most, usable CPUs {usable_cpus()}")
    best: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, so that the other load of the machine hits every case alike
        for policy in (True, False):
            key = "policy" if policy else "fixed"
            r = run(policy)
            best[f"{key} quiet"] = max(best.get(f"{key} quiet", 0.0), r["clips_per_s"])
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                r = run(policy)
            finally:
                spin.kill()
                spin.wait()
            best[f"{key} busy"] = max(best.get(f"{key} busy", 0.0), r["clips_per_s"])
            print(f"  {key:6s} threads at the end of the busy run: {r['threads']}", flush=True)
    for key in ("policy", "fixed"):
        q, b = best[f"{key} quiet"], best[f"{key} busy"]
        label = "thread policy" if key == "policy" else f"fixed {threads} threads"
        print(f"  {label:17s} quiet {q:7.1f} clips/s   one busy process {b:7.1f} clips/s   "
              f"ratio busy/quiet x{b / q:.2f}")
    print(f"  one busy process: thread policy / fixed threads x{best['policy busy'] / best['fixed busy']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny-batch", type=int, default=32)
    ap.add_argument("--tiny-steps", type=int, default=10)
    ap.add_argument("--ucf-batch", type=int, default=2, help="at least 2: the head BatchNorm3d needs 2 clips")
    ap.add_argument("--ucf-steps", type=int, default=2)
    ap.add_argument("--no-contention", action="store_true", help="skip the CPU-contention check")
    ap.add_argument("--contention-steps", type=int, default=15)
    ap.add_argument("--contention-repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_contention:
        contention(args.threads, args.tiny_batch, args.contention_steps, args.contention_repeats)
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
