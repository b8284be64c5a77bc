"""The whole SVFormer of a Lava bundle in **one Lava process graph**: every netx partition plus the float host
op as a Lava process, run together under ``Loihi2SimCfg(select_tag='fixed_pt')``; the logits are compared with
the emulation's (the bundle in the shared runner, partitions in the bit-exact fixed-point emulation).

The graph (built under the side environment's Python 3.10 by ``python process_graph.py JOB.json`` with the
package on ``PYTHONPATH``):

* one ``netx.hdf5.Network`` per partition, as written in the bundle;
* one host process, ``SVFormerHost`` (a ``PyLoihiProcessModel``, LoihiProtocol): for partition k an
  ``OutPort`` ``s_out{k}`` connected to the network's ``inp`` and, for each of its L_k layers, an ``InPort``
  ``a_in{k}_{i}`` connected to that layer's ``out`` (a two-layer partition returns both layers' spikes, as
  the host op's contract asks). The host computes the float part of the network (stem, residual streams,
  attention product, concatenation, temporal head, classifier: the ``svformer_float_host`` op of the shared
  bundle runner, :func:`~svformer_deploy.exporters.runtime.run_bundle`) inside its ``run_spk``: at the first
  step of partition k's slot it runs the float host, with the Lava outputs of partitions 0 .. k-1, up to
  the point where it needs partition k, and sends that partition's input spikes; after the last slot it runs
  it to the logits. (The float host is replayed from the start for each partition, K + 1 forward passes per
  clip: our first version ran the float host in a worker thread that blocked inside the forward until Lava
  answered; that run stopped making progress, every Lava process idle on its channel and the host's main thread
  blocked on a Python lock, so the host now needs no thread.)

Timing (Lava's LoihiProtocol; found by the per-partition runner and checked bit for bit here): a spike the
host sends at step s reaches layer 1 of a netx chain at s + 1 (the synapse buffers one step) and layer i's
spikes for it are received by the host at s + i. The host's schedule is static: the partitions are called in
the order the float host needs them (``order``, recorded on the emulation), partition k gets the slot of
steps [S_k, S_k + T + L_k) with S_0 = 1 and S_{k+1} = S_k + T + L_k: frame t is sent at S_k + t and layer i's
output for it read at S_k + t + i. Each network is built with netx's reset schedule at ``reset_offset = S_k``
(layer i zeroed at S_k + i, the step its first input arrives; interval longer than the run, so never again),
so before its slot a partition integrates nothing that reaches the host. One clip, K partitions: the run is
sum_k (T + L_k) steps.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def schedule(order, num_frames):
    """Slot starts S_k (1-based Lava steps) of partitions called in ``order`` = [(name, num_layers), ...] and
    the number of steps to run: S_0 = 1, S_{k+1} = S_k + T + L_k; steps = S_{K-1} + T + L_{K-1} - 1."""
    starts, s = [], 1
    for _name, layers in order:
        starts.append(s)
        s += num_frames + layers
    return starts, s - 1


def lava_end_to_end(bundle, clip, python: str | None = None, progress=None) -> dict:
    """Run one clip (C, T, H, W) through the bundle's whole network in one Lava process graph and compare it
    with the emulation: per partition layer, Lava's spikes vs the emulation's (bit-exact is the goal), and the
    logits (max |difference|, same top-1). Returns the report."""
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    import torch

    from svformer_deploy.errors import VerificationError
    from svformer_deploy.exporters.lava.hybrid import emulation_runtime
    from svformer_deploy.exporters.lava.sideenv import lava_python
    from svformer_deploy.exporters.lava.verify import load_lava_bundle
    from svformer_deploy.exporters.runtime import load_host_params, run_bundle

    say = progress or (lambda _m: None)
    bundle = Path(bundle).expanduser().resolve()
    manifest, _model, parts = load_lava_bundle(bundle)
    python = python or lava_python(say)
    clip = clip.unsqueeze(0) if clip.dim() == 4 else clip
    if clip.shape[0] != 1:
        raise VerificationError(f"the end-to-end Lava run takes one clip, got {clip.shape[0]}")
    emulate, order, emulated = emulation_runtime(parts), [], {}

    def recording(name, spikes):
        outs = emulate(name, spikes)
        order.append(name)
        emulated.update({f"{name}/{i}": o[:, 0].to(torch.int8).numpy() for i, o in enumerate(outs)})
        return outs

    with torch.no_grad():
        emu_logits = run_bundle(manifest, load_host_params(bundle), clip, run_partition=recording).logits
    by_name = {p.name: p for p in parts}
    with tempfile.TemporaryDirectory(prefix="svformer-lava-graph-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "clip.npz", clip=clip.numpy())
        job = {"bundle": str(bundle), "clip": str(tmp / "clip.npz"), "num_frames": int(clip.shape[2]),
               "num_classes": int(emu_logits.shape[1]), "outputs": str(tmp / "out.npz"),
               "spikes": str(tmp / "spikes.npz"), "summary": str(tmp / "summary.json"),
               "order": [{"name": n, "netx": str(bundle / manifest.partition(n).file),
                          "layers": len(by_name[n].layers)} for n in order]}
        (tmp / "job.json").write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONPATH"] = str(_package_alone(tmp / "path"))  # the host op is svformer_deploy's
        say(f"Running the whole network in one Lava process graph ({len(order)} netx partitions + the host)...")
        r = subprocess.run([python, __file__, str(tmp / "job.json")], capture_output=True, text=True, env=env,
                           cwd=tmp)
        if r.returncode != 0:
            raise VerificationError("the Lava process graph failed (exit {}):\n{}".format(
                r.returncode, "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])))
        with np.load(tmp / "out.npz") as z:
            lava_logits = torch.from_numpy(z["logits"]).to(emu_logits.dtype)
        with np.load(tmp / "spikes.npz") as z:
            lava_spikes = {k: z[k] for k in z.files}
        summary = json.loads((tmp / "summary.json").read_text())
    layers = {k: {"bit_exact": bool(np.array_equal(lava_spikes[k], v)),
                  "mismatches": int((lava_spikes[k] != v).sum()), "spikes": int(v.astype(np.int64).sum())}
              for k, v in emulated.items()}
    diff = float((lava_logits - emu_logits).abs().max())
    return {"lava_graph": summary, "partition_layers": layers,
            "all_partitions_bit_exact": all(v["bit_exact"] for v in layers.values()),
            "logits_lava": lava_logits[0].tolist(), "logits_emulation": emu_logits[0].tolist(),
            "logits_max_abs_diff": diff, "same_top1": bool(lava_logits.argmax(1) == emu_logits.argmax(1))}


def _package_alone(folder: Path) -> Path:
    """``folder`` holding only a link to this package: what the side environment may import from this one. The
    folder above the package is a checkout, or the site-packages of an installed wheel, whose numpy 2 / other
    torch would shadow the side environment's own."""
    from pathlib import Path

    folder.mkdir()
    (folder / "svformer_deploy").symlink_to(Path(__file__).resolve().parents[2], target_is_directory=True)
    return folder


def build_and_run(job):  # pragma: no cover - runs under the side environment (Python 3.10 + lava-dl)
    """Build the process graph of ``job`` (see the module docstring), run it, return (logits, spikes, summary)."""
    from lava.lib.dl import netx
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    T = job["num_frames"]
    order = [(p["name"], p["layers"]) for p in job["order"]]
    starts, num_steps = schedule(order, T)
    nets = [netx.hdf5.Network(net_config=p["netx"], reset_interval=num_steps + 2, reset_offset=s)
            for p, s in zip(job["order"], starts)]
    in_shapes = [tuple(n.inp.shape) for n in nets]
    out_shapes = [[tuple(layer.out.shape) for layer in n.layers] for n in nets]

    class SVFormerHost(AbstractProcess):
        """The float host op as a Lava process: one OutPort per partition input, one InPort per partition layer."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            for k, shape in enumerate(in_shapes):
                setattr(self, f"s_out{k}", OutPort(shape=shape))
                for i, out in enumerate(out_shapes[k]):
                    setattr(self, f"a_in{k}_{i}", InPort(shape=out))
            self.logits = Var(shape=(1, job["num_classes"]), init=np.zeros((1, job["num_classes"])))

    class _Needs(Exception):  # the float host reached a partition Lava has not computed yet
        def __init__(self, name, frames):
            super().__init__(name)
            self.name, self.frames = name, frames

    class HostModel(PyLoihiProcessModel):
        logits: np.ndarray = LavaPyType(np.ndarray, float)

        def __init__(self, proc_params):
            super().__init__(proc_params)
            self.done = {}  # partition -> every layer's Lava output (T, W', H', C') int8, in call order
            self.active = None  # (k, input frames (T, W, H, C), [per-layer outputs (T, W', H', C')])
            self.host = None

        def _float_host(self):
            """Run the float host op until it needs a partition Lava has not computed: (name, frames), or
            ("done", logits). Partitions already computed are taken from ``self.done`` (replayed)."""
            import torch

            from svformer_deploy.exporters import read_bundle
            from svformer_deploy.exporters.runtime import load_host_params, run_bundle

            if self.host is None:
                torch.set_num_threads(1)
                with np.load(job["clip"], allow_pickle=False) as z:
                    clip = torch.from_numpy(z["clip"])
                self.host = (read_bundle(job["bundle"]), load_host_params(job["bundle"]), clip)
            manifest, host_params, clip = self.host

            def run_partition(name, spikes):  # spikes (T, 1, C, H, W) -> every layer's (T, 1, C', H', W')
                if name not in self.done:
                    raise _Needs(name, spikes[:, 0].permute(0, 3, 2, 1).numpy())
                return [torch.from_numpy(o).permute(0, 3, 2, 1).unsqueeze(1).to(spikes.dtype)
                        for o in self.done[name]]

            try:
                with torch.no_grad():
                    run = run_bundle(manifest, host_params, clip, run_partition=run_partition)
                    return "done", run.logits.numpy()
            except _Needs as need:
                return need.name, need.frames

        def run_spk(self):
            s = self.time_step
            k = next((j for j, st in enumerate(starts) if st <= s < st + T + order[j][1]), None)
            if k is not None and s == starts[k]:
                name, frames = self._float_host()
                if name != order[k][0]:
                    raise RuntimeError(f"the host needs {name} where the schedule has {order[k][0]}")
                self.active = (k, frames, [np.zeros((T,) + o, dtype=np.int8) for o in out_shapes[k]])
            for j, shape in enumerate(in_shapes):
                x = np.zeros(shape)
                if self.active and j == self.active[0] and s - starts[j] < T:
                    x = self.active[1][s - starts[j]].astype(float)
                getattr(self, f"s_out{j}").send(x)
            for j in range(len(in_shapes)):
                for i in range(len(out_shapes[j])):
                    a = getattr(self, f"a_in{j}_{i}").recv()
                    t = s - starts[j] - (i + 1)
                    if self.active and j == self.active[0] and 0 <= t < T:
                        self.active[2][i][t] = a
            if self.active and s == starts[self.active[0]] + T + order[self.active[0]][1] - 1:
                self.done[order[self.active[0]][0]] = self.active[2]
                self.active = None
            if s == num_steps:
                name, logits = self._float_host()
                if name != "done":
                    raise RuntimeError(f"the host needs partition {name} after the last scheduled slot")
                self.logits[:] = logits
                np.savez_compressed(job["spikes"], **{f"{n}/{i}": o.transpose(0, 3, 2, 1)
                                                      for n, outs in self.done.items() for i, o in enumerate(outs)})

    for k, shape in enumerate(in_shapes):
        setattr(HostModel, f"s_out{k}", LavaPyType(PyOutPort.VEC_DENSE, float))
        for i in range(len(out_shapes[k])):
            setattr(HostModel, f"a_in{k}_{i}", LavaPyType(PyInPort.VEC_DENSE, float))
    HostModel = tag("fixed_pt")(requires(CPU)(implements(proc=SVFormerHost, protocol=LoihiProtocol)(HostModel)))

    host = SVFormerHost(name="svformer_host")
    for k, net in enumerate(nets):
        getattr(host, f"s_out{k}").connect(net.inp)
        for i, layer in enumerate(net.layers):
            layer.out.connect(getattr(host, f"a_in{k}_{i}"))
    # the compiler looks a process up by instance in this map (lava-nc 0.10, compiler_graphs._map_proc_to_model)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={host: HostModel})
    t0 = time.perf_counter()
    try:
        host.run(condition=RunSteps(num_steps=num_steps), run_cfg=cfg)
        logits = np.array(host.logits.get()).reshape(1, -1)
    finally:
        host.stop()
    summary = {"steps": num_steps, "partitions": len(nets), "lava_processes": 1 + len(nets),
               "slot_starts": dict(zip([n for n, _ in order], starts)), "seconds": round(time.perf_counter() - t0, 2)}
    return logits, summary


def main(argv):  # pragma: no cover - side environment entry point
    if len(argv) != 1:
        print("usage: python process_graph.py JOB.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        job = json.load(f)
    logits, summary = build_and_run(job)
    np.savez(job["outputs"], logits=logits)
    with open(job["summary"], "w") as f:
        json.dump(summary, f, indent=1)
    print(f"[lava-graph] {summary['partitions']} netx partitions + host in one graph, {summary['steps']} steps, "
          f"{summary['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
