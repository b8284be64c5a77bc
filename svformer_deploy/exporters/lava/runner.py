"""Standalone Lava runner: run netx files in Lava's bit-accurate fixed-point simulator.

Runs under the *side* environment (Python 3.10, lava-dl 0.6, numpy < 2, h5py) and imports nothing from
svformer-deploy, so it can be copied next to a bundle and run on its own::

    python runner.py JOB.json

JOB.json::

    {"inputs": "in.npz", "outputs": "out.npz", "summary": "summary.json",
     "partitions": [{"name": "blocks1.0.mlp", "netx": "blocks1.0.mlp.net"}, ...]}

``in.npz`` holds, per partition name, input spikes shaped (B, T, C, H, W) (0/1, B clips; time-major per clip,
channels first). **All B clips of a partition go through one Lava run** (one ``netx.hdf5.Network``, one
compile, one runtime start-up): the clips are concatenated along time, each followed by L zero steps
(L = number of layers), so clip b occupies the period P = T + L starting at step b P. netx's reset schedule
(``reset_interval = P``, ``reset_offset = 1``) zeroes the state (u and v) of layer l at step b P + l + 1 of
every period, before that layer's first synapse-delayed input of clip b arrives; the current decays
completely every step (``du = 4095``), so each clip sees a network in exactly the state a fresh run would give
(the verifier checks that bit for bit against the emulation, clip by clip). A ``RingBuffer`` source feeds
(W, H, C, B P) data (netx is (x, y, f) = (W, H, C), time last), the network runs B P steps under
``Loihi2SimCfg(select_tag='fixed_pt')`` and a ``RingBuffer`` sink records the last layer. Every synapse
delays by one step, so the output for step t of clip b is at step b P + t + L: the runner returns those as
(B, T, C', H', W') in ``out.npz`` under the same name. The summary JSON has, per partition, the Lava
version, steps run, latency, spike counts and the time split into network build, first step (compile and
runtime start-up) and the remaining steps.
"""

import json
import sys
import time

import numpy as np


def run_netx(netx_path, spikes):
    """(output spikes (B, T, C', H', W') int8, latency L, timings) of the netx chain in ``netx_path`` for
    input spikes (B, T, C, H, W), all B clips in one Lava run (see the module docstring)."""
    import h5py
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    with h5py.File(netx_path, "r") as f:
        num_layers = len(f["layer"]) - 1  # layer/0 is the input description (no neuron)
    B, T = spikes.shape[:2]
    period = T + num_layers
    data = np.zeros(spikes.shape[2:][::-1] + (B, period), dtype=np.int32)  # (W, H, C, B, P)
    data[..., :T] = np.transpose(spikes, (4, 3, 2, 0, 1))
    data = data.reshape(data.shape[:3] + (B * period,))
    t0 = time.perf_counter()
    # Lava's neurons run from step 1, before the synapse-delayed input arrives, and would integrate their bias
    # (and, from the second clip on, the previous clip's state) before it. netx's reset schedule (layer l resets
    # at steps k P + reset_offset + l) clears layer l just before its first real input of every clip.
    net = netx.hdf5.Network(net_config=str(netx_path), reset_interval=period, reset_offset=1)
    source = io.source.RingBuffer(data=data)
    sink = io.sink.RingBuffer(shape=net.out.shape, buffer=B * period)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    t1 = time.perf_counter()
    try:
        net.run(condition=RunSteps(num_steps=1), run_cfg=cfg)  # compiles and starts the runtime
        t2 = time.perf_counter()
        if B * period > 1:
            net.run(condition=RunSteps(num_steps=B * period - 1), run_cfg=cfg)
        t3 = time.perf_counter()
        out = sink.data.get()
    finally:
        net.stop()
    out = np.transpose(out, (3, 2, 1, 0)).reshape((B, period) + out.shape[2::-1])  # (B, P, C', H', W')
    timings = {"build_s": round(t1 - t0, 3), "first_step_s": round(t2 - t1, 3), "steps_s": round(t3 - t2, 3),
               "seconds_per_step": round((t3 - t2) / max(B * period - 1, 1), 5)}
    return out[:, num_layers:num_layers + T].astype(np.int8), num_layers, timings


def main(argv):
    if len(argv) != 1:
        print("usage: python runner.py JOB.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        job = json.load(f)
    import lava.lib.dl as _dl  # noqa: F401  (fail early with an import error if lava-dl is missing)
    from importlib.metadata import version

    inputs = np.load(job["inputs"])
    results, summary = {}, {"lava_dl": version("lava-dl"), "lava_nc": version("lava-nc"),
                            "numpy": np.__version__, "python": sys.version.split()[0], "partitions": {}}
    for part in job["partitions"]:
        name = part["name"]
        x = inputs[name]
        t0 = time.perf_counter()
        results[name], latency, timings = run_netx(part["netx"], x)
        summary["partitions"][name] = {
            "netx": part["netx"], "samples": int(x.shape[0]), "timesteps": int(x.shape[1]), "lava_runs": 1,
            "latency_steps": latency, "steps_run": int(x.shape[0]) * (int(x.shape[1]) + latency), **timings,
            "input_spikes": int(x.sum()), "output_spikes": int(results[name].sum()),
            "output_shape": list(results[name].shape), "seconds": round(time.perf_counter() - t0, 3)}
        print(f"[lava-runner] {name}: {x.shape[0]} clip(s) in one run, {summary['partitions'][name]['seconds']} s "
              f"(build {timings['build_s']} s, first step {timings['first_step_s']} s, "
              f"{timings['seconds_per_step'] * 1e3:.1f} ms/step)", flush=True)
    np.savez_compressed(job["outputs"], **results)
    with open(job["summary"], "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
