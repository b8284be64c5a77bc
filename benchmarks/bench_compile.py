"""What ``torch.compile`` gives and costs for training on CPU: eager vs compiled (inductor) training steps.

One training step = forward, cross-entropy, backward, gradient clipping and AdamW, as ``train`` runs it, of
``svformer_tiny`` at the demo's size (32x32, T=8, batch 32; random clips: no data loading). Prints, in one run:

* the compile cost: wall time of the first compiled step minus an eager step, with an empty inductor cache
  ("cold", a fresh machine) and again after ``torch._dynamo.reset()`` (inductor's on-disk caches warm, a later
  process on the same machine);
* steady-state time per step, eager and compiled, best of ``--repeat``, interleaved so that the machine's other
  load hits both alike: wall time and this process's CPU time (with ``--threads 1`` the CPU time is the compute,
  which other processes preempting this one do not inflate), and their ratios;
* that the compiled model is one graph (``fullgraph=True``) and how far its gradients are from the eager ones
  (float32: the compiler rounds in another order; tests/models/test_compile.py checks equality in float64).

    python benchmarks/bench_compile.py --threads 2
    python benchmarks/bench_compile.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

CACHE_GIVEN = "TORCHINDUCTOR_CACHE_DIR" in os.environ  # then the "cold" compile may find a cache
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-compile-inductor-"))

import torch  # noqa: E402  (after the cache folder is chosen)
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from svformer_deploy.models import create_model  # noqa: E402
from svformer_deploy.training import param_groups  # noqa: E402


def make_step(model: nn.Module, params: nn.Module, x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201
    """A training step of ``model`` (compiled or not) updating ``params``' parameters."""
    opt = torch.optim.AdamW(param_groups(params, 0.05), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params.parameters(), 1.0)
        opt.step()

    return step


def grads(model: nn.Module, params: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    params.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in params.named_parameters()}


def timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = create_model("svformer_tiny", img_size=args.img_size, num_frames=args.frames).train()
    x = torch.randn(args.batch, *base.config.input_shape)
    y = torch.randint(0, base.config.num_classes, (args.batch,))
    print(f"torch {torch.__version__}, {args.threads} thread(s), svformer_tiny {args.img_size}x{args.img_size} "
          f"T={args.frames} batch {args.batch}, inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")

    eager_model = copy.deepcopy(base)
    eager = make_step(eager_model, eager_model, x, y)
    eager()  # warm-up (and the fused kernel library loaded)
    eager_step = timed(eager)

    compiled_params = copy.deepcopy(base)
    compiled_model = torch.compile(compiled_params, fullgraph=True, dynamic=False)
    compiled = make_step(compiled_model, compiled_params, x, y)
    cold = timed(compiled) - eager_step
    torch._dynamo.reset()
    compiled_model = torch.compile(compiled_params, fullgraph=True, dynamic=False)
    compiled = make_step(compiled_model, compiled_params, x, y)
    warm = timed(compiled) - eager_step
    print(f"compile (first compiled step - one eager step): {'cold' if not CACHE_GIVEN else 'given'} cache "
          f"{cold:.1f} s, warm cache {warm:.1f} s")

    wall = {"eager": float("inf"), "compiled": float("inf")}
    cpu = dict(wall)
    for _ in range(args.repeat):  # interleaved
        for name, fn in (("eager", eager), ("compiled", compiled)):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    for name in wall:
        print(f"{name:>8}: {wall[name] * 1000:8.1f} ms/step wall ({args.batch / wall[name]:6.1f} clips/s), "
              f"{cpu[name] * 1000:8.1f} ms CPU")
    print(f"compiled / eager: wall x{wall['compiled'] / wall['eager']:.2f}, CPU x{cpu['compiled'] / cpu['eager']:.2f}")

    torch.manual_seed(1)
    same = copy.deepcopy(base)
    g_eager = grads(same, same, x, y)
    g_comp = grads(torch.compile(same, fullgraph=True, dynamic=False), same, x, y)
    diff = torch.cat([(g_comp[n] - g_eager[n]).flatten() for n in g_eager])
    whole = torch.cat([g_eager[n].flatten() for n in g_eager])
    print(f"gradients compiled vs eager (float32, same weights): ||difference|| / ||gradient|| = "
          f"{float(diff.norm() / whole.norm()):.2e} (rounding order, and the spikes it flips at the threshold)")


if __name__ == "__main__":
    main()
