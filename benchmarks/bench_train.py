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
    python benchmarks/bench_train.py --device cuda --ucf-batch 8 --ucf-steps 5 --ucf-only

On CUDA (``--device cuda``) the steps are timed between ``torch.cuda.synchronize()`` calls, the contention check
is skipped, and ``svformer_ucf101`` is also timed with spikingjelly's PLIF in place of ours (the variant of
``bench_model.py``) in the same run, with the peak GPU memory of each.
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
                     warmup_s: float = 0.0, device: str = "cpu", spikingjelly: bool = False, **overrides) -> dict:
    """Time ``steps`` training steps of model ``name`` at ``batch`` clips per step, after one warm-up step and
    as many more as fill ``warmup_s`` seconds; ``governor.tick()`` runs before every step."""
    torch.manual_seed(0)
    model = create_model(name, **overrides).train()
    if spikingjelly:
        from bench_model import swap_neurons

        swap_neurons(model)
    model = model.to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    x = torch.randn(batch, *model.config.input_shape, device=device)
    y = torch.randint(0, model.config.num_classes, (batch,), device=device)
    cuda = x.is_cuda

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
    if cuda:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(x.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"model": name + (" (spikingjelly PLIF)" if spikingjelly else ""), "batch": batch, "steps": steps,
            "input": tuple(x.shape), "wall_s": wall, "cpu_s": cpu, "clips_per_s": batch * steps / wall,
            "threads": torch.get_num_threads(),
            "peak_mib": torch.cuda.max_memory_allocated(x.device) / 2**20 if cuda else None}


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
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--ucf-set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override of svformer_ucf101 (repeatable; check.sh --dry-run shrinks it)")
    ap.add_argument("--ucf-only", action="store_true",
                    help="only svformer_ucf101 (and, on CUDA, its spikingjelly variant)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if not args.no_contention and not cuda:
        contention(args.threads, args.tiny_batch, args.contention_steps, args.contention_repeats)
    rows = [] if args.ucf_only else [
        clips_per_second("svformer_tiny", args.tiny_batch, args.tiny_steps, device=args.device),
        clips_per_second("svformer_tiny", args.tiny_batch, args.tiny_steps, device=args.device, img_size=32)]
    ucf = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.ucf_set)}
    rows.append(clips_per_second("svformer_ucf101", args.ucf_batch, args.ucf_steps, device=args.device, **ucf))
    if cuda:
        rows.append(clips_per_second("svformer_ucf101", args.ucf_batch, args.ucf_steps, device=args.device,
                                     spikingjelly=True, **ucf))
    where = torch.cuda.get_device_name(args.device) if cuda else f"CPU, {args.threads} thread(s)"
    print(f"training throughput on {where}, torch {torch.__version__}")
    for r in rows:
        peak = f"  peak GPU memory {r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else ""
        print(f"  {r['model']:16s} input {r['input']}  {r['steps']} steps  wall {r['wall_s']:.2f} s  "
              f"cpu {r['cpu_s']:.2f} s  -> {r['clips_per_s']:.2f} clips/s{peak}")
    base = next(r for r in rows if r["model"] == "svformer_ucf101")
    for r in rows:
        if r["model"].startswith("svformer_tiny"):
            print(f"ratio {r['model']} {r['input'][-1]}x{r['input'][-1]} / svformer_ucf101: "
                  f"{r['clips_per_s'] / base['clips_per_s']:.1f}x")
    if cuda:
        sj = rows[-1]
        print(f"svformer_ucf101 training step, ours / spikingjelly PLIF: "
              f"clips/s x{base['clips_per_s'] / sj['clips_per_s']:.2f}, "
              f"peak GPU memory x{base['peak_mib'] / sj['peak_mib']:.3f}")


if __name__ == "__main__":
    main()
