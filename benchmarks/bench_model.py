"""Forward and forward+backward wall time of SVFormer with our PLIF vs spikingjelly 0.0.0.0.14's PLIF.

The baseline is what a CPU user of the reference gets: the same model with every neuron replaced by
``neuron.ParametricLIFNode(step_mode='m', backend='torch', detach_reset=True, surrogate_function=surrogate.ATan())``
(``reset_net`` after each pass). Both variants are timed in the same run, interleaved, best of N repeats.
Then our forward+backward with and without spike packing (``svformer_deploy.models.spike_packing``; off = the
same step under ``torch.autograd.graph.disable_saved_tensors_hooks``), interleaved, and the peak RSS of one
training step of ours, ours without packing and the spikingjelly variant, each in a fresh process.

    python benchmarks/bench_model.py [--models svformer_tiny svformer_ucf101] [--repeats 3] [--threads 2]
    python benchmarks/bench_model.py --device cuda --models svformer_ucf101 --batch 8 --memory-batch 8

On CUDA (``--device cuda``) every pass is timed between ``torch.cuda.synchronize()`` calls, each line also gives
clips/s, the neuron layers alone are timed for our fused (Triton) kernel, our pure-torch reference kernel and
spikingjelly's, and the memory comparison is the peak GPU memory allocated by one training step
(``torch.cuda.max_memory_allocated``, reset before each variant) instead of the peak RSS.

Needs the optional benchmark dependency: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
from torch import nn

from svformer_deploy.models import PLIF, create_model


class SpikingJellyPLIF(nn.Module):
    """spikingjelly's multi-step PLIF (torch backend) in place of ours, sharing our ``w``."""

    def __init__(self, ours: PLIF) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.node = neuron.ParametricLIFNode(init_tau=ours.tau, surrogate_function=surrogate.ATan(),
                                             detach_reset=True, step_mode="m", backend="torch")
        self.node.w = ours.w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.node.reset()
        return self.node(x)


def swap_neurons(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, PLIF):
                setattr(module, child_name, SpikingJellyPLIF(child))
    return model


def unpacked() -> contextlib.AbstractContextManager:
    """The forward without spike packing (saved-tensor hooks disabled: the model then installs none)."""
    return torch.autograd.graph.disable_saved_tensors_hooks("spike packing off for the benchmark's baseline")


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


@contextlib.contextmanager
def reference_kernel():
    """Our PLIF with its pure-torch reference kernel (:class:`~svformer_deploy.models.neurons._PLIFMultiStep`)
    instead of the fused C++ / Triton one."""
    from svformer_deploy.models import neurons

    fused = neurons._fused_kernel
    neurons._fused_kernel = lambda x_seq: None
    try:
        yield
    finally:
        neurons._fused_kernel = fused


def time_pass(model: nn.Module, x: torch.Tensor, backward: bool, packing: bool = True,
              clock: Callable[[], float] = time.perf_counter) -> float:
    _sync(x)
    t0 = clock()
    if backward:
        model.zero_grad(set_to_none=True)
        with contextlib.nullcontext() if packing else unpacked():
            y = model(x)
        y.sum().backward()
    else:
        with torch.no_grad():
            model(x)
    _sync(x)
    return clock() - t0


def bench(name: str, repeats: int, batch: int, device: str = "cpu") -> None:
    # BatchNorm cannot use batch statistics of a single clip (the head's BN sees one value per channel), so
    # batch 1 runs with BN in eval mode (running statistics) for both variants; gradients are still computed
    train_bn = batch > 1
    ours = create_model(name).train(train_bn)
    ref = swap_neurons(create_model(name)).train(train_bn)
    ref.load_state_dict(ours.state_dict(), strict=False)
    ours, ref = ours.to(device), ref.to(device)
    x = torch.randn(batch, *ours.config.input_shape, device=device)
    for backward in (False, True):
        times = {"ours": [], "spikingjelly": []}
        for model in (ours, ref):  # warm-up
            time_pass(model, x, backward)
        for _ in range(repeats):
            times["ours"].append(time_pass(ours, x, backward))
            times["spikingjelly"].append(time_pass(ref, x, backward))
        a, b = min(times["ours"]), min(times["spikingjelly"])
        kind = "forward+backward" if backward else "forward"
        print(f"{name:16s} {kind:17s} batch={batch} T={ours.config.num_frames} {ours.config.img_size}px  "
              f"BN {'train' if train_bn else 'eval '}  ours {a * 1e3:9.1f} ms ({batch / a:8.2f} clips/s)   "
              f"spikingjelly {b * 1e3:9.1f} ms ({batch / b:8.2f} clips/s)   speed-up x{b / a:.2f}", flush=True)


def bench_packing(name: str, repeats: int, batch: int, clock: Callable[[], float] = time.perf_counter,
                  device: str = "cpu") -> None:
    """Forward+backward of our model with spike packing vs without, interleaved, best of ``repeats`` by ``clock``
    (``time.process_time`` with one thread: CPU time, which other processes do not inflate)."""
    model = create_model(name).train(batch > 1).to(device)
    x = torch.randn(batch, *model.config.input_shape, device=device)
    times: dict[bool, list[float]] = {True: [], False: []}
    for packing in (True, False):  # warm-up
        time_pass(model, x, True, packing)
    for _ in range(repeats):
        for packing in (True, False):
            times[packing].append(time_pass(model, x, True, packing, clock))
    a, b = min(times[True]), min(times[False])
    kind = "CPU time" if clock is time.process_time else "wall time"
    print(f"{name:16s} forward+backward batch={batch} ({kind}) spike packing on {a * 1e3:9.1f} ms   off {b * 1e3:9.1f} ms   "
          f"on/off x{a / b:.3f}", flush=True)


def bench_neurons_alone(name: str, repeats: int, batch: int, device: str = "cpu") -> None:
    """Forward+backward of every neuron layer alone, on the very tensors (shape and strides) it receives inside
    the model: ours (fused kernel), ours with the reference kernel, spikingjelly's; summed over layers."""
    model = create_model(name).eval().to(device)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: inputs.__setitem__(n, a[0].detach()))
             for n, m in model.named_modules() if isinstance(m, PLIF)]
    with torch.no_grad():
        model(torch.randn(batch, *model.config.input_shape, device=device))
    for h in hooks:
        h.remove()
    total = {"ours": 0.0, "reference": 0.0, "spikingjelly": 0.0}
    for x in inputs.values():
        variants = {"ours": PLIF().to(device), "reference": PLIF().to(device),
                    "spikingjelly": SpikingJellyPLIF(PLIF()).to(device)}
        best = {k: float("inf") for k in variants}
        for _ in range(repeats + 1):  # the first round warms up (Triton compiles each shape once)
            for k, neuron in variants.items():
                xx = x.requires_grad_()
                with reference_kernel() if k == "reference" else contextlib.nullcontext():
                    _sync(xx)
                    t0 = time.perf_counter()
                    neuron(xx).sum().backward()
                    _sync(xx)
                    best[k] = min(best[k], time.perf_counter() - t0)
        for k in total:
            total[k] += best[k]
    a, r, b = total["ours"], total["reference"], total["spikingjelly"]
    print(f"{name:16s} neuron layers alone ({len(inputs)} layers, fwd+bwd on their in-model inputs)  "
          f"ours {a * 1e3:9.1f} ms   spikingjelly {b * 1e3:9.1f} ms   speed-up x{b / a:.2f};   fused vs reference "
          f"kernel: {a * 1e3:.1f} vs {r * 1e3:.1f} ms, x{r / a:.2f}", flush=True)


def _rss_child(variant: str, name: str, batch: int) -> None:
    """In a fresh process: one training step (forward, backward, AdamW) of ``name``; print the resident set size
    before the step and the process's peak, in MiB."""
    import resource

    from svformer_deploy.models.neurons import _fused_kernel

    model = create_model(name).train()
    if variant == "spikingjelly":
        swap_neurons(model)
    packing = contextlib.nullcontext() if variant != "ours-unpacked" else unpacked()
    x = torch.randn(batch, *model.config.input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _fused_kernel(x)  # load the fused kernel library (if any) before the baseline
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    try:  # reset the peak-RSS mark (Linux >= 4.0), so that the peak is the step's, not the imports' or a build's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        scope = "step"
    except OSError:
        scope = "process"
    with packing:
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    if scope == "step":
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB -> MiB
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{before:.1f} {peak:.1f} {scope}")


def bench_memory(name: str, batch: int) -> None:
    """Peak RSS of one training step, ours vs spikingjelly (and ours without spike packing), each in its own fresh
    process."""
    import subprocess
    import sys

    res = {}
    for variant in ("ours", "ours-unpacked", "spikingjelly"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", variant, "--models", name, "--batch", str(batch),
                              "--threads", str(torch.get_num_threads())],
                             capture_output=True, text=True, check=True).stdout.split()
        res[variant] = (float(out[-3]), float(out[-2]), out[-1])
    (a0, a, scope), (_, u, _), (b0, b, _) = res["ours"], res["ours-unpacked"], res["spikingjelly"]
    print(f"{name:16s} peak RSS of one training step batch={batch} (peak over the {scope}) ours {a:8.0f} MiB   "
          f"spikingjelly {b:8.0f} MiB   "
          f"ratio x{a / b:.3f}   (step's own growth over the {a0:.0f}/{b0:.0f} MiB before it: "
          f"{a - a0:.0f} vs {b - b0:.0f} MiB, x{(a - a0) / (b - b0):.3f});   ours without spike packing {u:8.0f} MiB, "
          f"x{u / b:.3f}", flush=True)


def bench_gpu_memory(name: str, batch: int, device: str) -> None:
    """Peak GPU memory allocated by one training step (forward, backward, AdamW), ours vs spikingjelly's variant
    (and ours without spike packing), each measured from a reset peak with only its own model alive."""
    import gc

    res = {}
    for variant in ("ours", "ours-unpacked", "spikingjelly"):
        torch.manual_seed(0)
        model = create_model(name).train()
        if variant == "spikingjelly":
            swap_neurons(model)
        model = model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, *model.config.input_shape, device=device)
        y = torch.randint(0, model.config.num_classes, (batch,), device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with unpacked() if variant == "ours-unpacked" else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize(device)
        res[variant] = (torch.cuda.max_memory_allocated(device) / 2**20, before / 2**20)
        del model, opt, x, y, loss
        gc.collect()
        torch.cuda.empty_cache()
    (a, a0), (u, _), (b, b0) = res["ours"], res["ours-unpacked"], res["spikingjelly"]
    print(f"{name:16s} peak GPU memory of one training step batch={batch}  ours {a:8.0f} MiB   spikingjelly "
          f"{b:8.0f} MiB   ratio x{a / b:.3f}   (over the {a0:.0f}/{b0:.0f} MiB of model and input: {a - a0:.0f} vs "
          f"{b - b0:.0f} MiB, x{(a - a0) / (b - b0):.3f});   ours without spike packing {u:8.0f} MiB, x{u / b:.3f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["svformer_tiny", "svformer_ucf101"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: 8 for small models, 1 for svformer_ucf101")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--memory-model", default="svformer_ucf101", help="model of the peak-RSS comparison ('' = skip)")
    ap.add_argument("--memory-batch", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--rss-child", choices=["ours", "ours-unpacked", "spikingjelly"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return _rss_child(args.rss_child, args.models[0], args.batch)
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name(args.device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {args.device} ({where})")
    for name in args.models:
        batch = args.batch or (1 if name == "svformer_ucf101" and not cuda else 8)
        bench(name, args.repeats, batch, args.device)
        bench_packing(name, args.repeats, batch, device=args.device)
        bench_neurons_alone(name, args.repeats, batch, args.device)
    if args.memory_model:
        if cuda:
            bench_gpu_memory(args.memory_model, args.memory_batch, args.device)
        else:
            bench_memory(args.memory_model, args.memory_batch)


if __name__ == "__main__":
    main()
