"""Standalone Lava runner: run netx files in Lava's bit-accurate fixed-point simulator.

Runs under the *side* environment (Python 3.10, lava-dl 0.6, numpy < 2, h5py) and imports nothing from
svformer-deploy, so it can be copied next to a bundle and run on its own::

    python runner.py JOB.json

JOB.json::

    {"inputs": "in.npz", "outputs": "out.npz", "summary": "summary.json",
     "partitions": [{"name": "blocks1.0.mlp", "netx": "blocks1.0.mlp.net"}, ...]}

``in.npz`` holds, per partition name, input spikes shaped (B, T, C, H, W) (0/1, one sample per b; time-major
per sample, channels first). Each sample is run in a fresh ``netx.hdf5.Network``: a ``RingBuffer`` source
feeds (W, H, C, T + L) data (netx is (x, y, f) = (W, H, C), time last; L zero steps appended), the network
runs ``T + L`` steps with netx's reset schedule set so that layer l starts from zero state at step l + 1 (the
step its first input arrives; before it, it would have integrated its bias alone), under ``Loihi2SimCfg(select_tag='fixed_pt')`` and a ``RingBuffer`` sink records the
last layer. Every synapse delays by one step, so the output for input step t is at step t + L (L = number
of layers): the runner returns steps L .. L + T - 1 as (B, T, C', H', W') in ``out.npz`` under the same name.
The summary JSON has, per partition, the Lava version, steps run, latency, spike counts and seconds.
"""

import json
import sys
import time

import numpy as np


def run_netx(netx_path, spikes):
    """Output spikes (T, C', H', W') int8 of the netx chain in ``netx_path`` for input spikes (T, C, H, W)."""
    import h5py
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    with h5py.File(netx_path, "r") as f:
        num_layers = len(f["layer"]) - 1  # layer/0 is the input description (no neuron)
    T = spikes.shape[0]
    data = np.zeros(spikes.shape[1:][::-1] + (T + num_layers,), dtype=np.int32)  # (W, H, C, T + L)
    data[..., :T] = np.transpose(spikes, (3, 2, 1, 0))
    # Lava's neurons run from step 1, before the synapse-delayed input arrives, and would integrate their bias
    # for l extra steps. netx's reset schedule (layer l resets at step reset_offset + l) clears layer l at step
    # l + 1, just before its first real input; the interval is longer than the run, so it never resets again.
    net = netx.hdf5.Network(net_config=str(netx_path), reset_interval=T + num_layers + 1, reset_offset=1)
    source = io.source.RingBuffer(data=data)
    sink = io.sink.RingBuffer(shape=net.out.shape, buffer=T + num_layers)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=T + num_layers), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
    finally:
        net.stop()
    out = np.transpose(out, (3, 2, 1, 0))  # (T + L, C', H', W')
    return out[num_layers:num_layers + T].astype(np.int8), num_layers


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
        outs = []
        for b in range(x.shape[0]):
            y, latency = run_netx(part["netx"], x[b])
            outs.append(y)
        results[name] = np.stack(outs)
        summary["partitions"][name] = {
            "netx": part["netx"], "samples": int(x.shape[0]), "timesteps": int(x.shape[1]),
            "latency_steps": latency, "steps_run": int(x.shape[1]) + latency,
            "input_spikes": int(x.sum()), "output_spikes": int(results[name].sum()),
            "output_shape": list(results[name].shape), "seconds": round(time.perf_counter() - t0, 3)}
        print(f"[lava-runner] {name}: {x.shape[0]} sample(s), {summary['partitions'][name]['seconds']} s", flush=True)
    np.savez_compressed(job["outputs"], **results)
    with open(job["summary"], "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
