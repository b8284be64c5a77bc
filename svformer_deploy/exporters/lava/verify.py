"""``verify --target lava``: run a Lava bundle's netx files in Lava's bit-accurate simulator and compare.

1. the bundle's files are checked (SHA-256), the netx files read back, and the manifest re-derived from the
   bundle's model and netx files (every operation covered exactly once, same partitions, host op, approximations);
2. real input spikes: the float model (rebuilt from the bundle's config and ``host_params.npz``) runs on
   validation clips; each partition's input is the recorded output of its source neuron layer;
3. Lava: :mod:`runner` in the side environment (:mod:`sideenv`) runs each netx file with
   ``Loihi2SimCfg(select_tag='fixed_pt')`` on those spikes; its output is compared with
   :func:`~svformer_deploy.exporters.lava.emulate.emulate_partition` on the same spikes: the goal is
   **bit-exact** (0 differing spikes) for every partition;
4. quantisation cost per partition: agreement of the emulated spikes with the float model's spikes, on the
   same inputs;
5. accuracy cost: top-1 of the float model vs the quantised model (every partition in the fixed-point
   emulation, host operations in float) on the validation clips.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from svformer_deploy._atomic import atomic_write_json
from svformer_deploy.errors import BundleFormatError, VerificationError
from svformer_deploy.exporters import read_bundle
from svformer_deploy.exporters.bundle import (HOST_PARAMS_NAME, VERIFICATION_NAME, check_bundle_files,
                                              check_manifest_matches)
from svformer_deploy.exporters.lava.crop import crop_for, crop_policy
from svformer_deploy.exporters.lava.emulate import emulate_partition
from svformer_deploy.exporters.lava.export import HOST_PREFIX, RUNNER_NAME, lava_manifest
from svformer_deploy.exporters.lava.hybrid import emulation_runtime
from svformer_deploy.exporters.lava.netx import read_netx, write_netx
from svformer_deploy.exporters.lava.partition import Partition, Tap, partition_taps
from svformer_deploy.exporters.runtime import load_host_params, run_bundle
from svformer_deploy.models import SVFormerConfig, create_model, record_spikes

__all__ = ["load_lava_bundle", "run_lava", "verify_lava", "format_lava_report"]


def load_lava_bundle(bundle: str | os.PathLike) -> tuple[Any, torch.nn.Module, list[Partition]]:
    """(manifest, float model, quantised partitions read from the netx files) of a Lava bundle."""
    bundle = Path(bundle)
    manifest = read_bundle(bundle)
    if manifest.target != "lava":
        raise VerificationError(f"{bundle} was exported --to {manifest.target}; use `verify --target {manifest.target}`"
                                " or export with `--to lava`")
    check_bundle_files(bundle, manifest)
    model = create_model(SVFormerConfig.from_dict(manifest.config))
    with np.load(bundle / HOST_PARAMS_NAME, allow_pickle=False) as z:
        if sorted(z.files) != manifest.host_ops[0].params:
            raise BundleFormatError(f"{bundle / HOST_PARAMS_NAME} does not hold the state dict of the model its "
                                    "config builds; re-export the bundle with `svformer-deploy export`")
        model.load_state_dict({k[len(HOST_PREFIX):]: torch.from_numpy(z[k]) for k in z.files})
    model.eval()
    parts = []
    for spec in manifest.partitions:
        layers, meta = read_netx(bundle / spec.file)
        src = Tap(**{**meta["source"], "shape": tuple(meta["source"]["shape"]),
                     "channels": tuple(meta["source"]["channels"]) if meta["source"]["channels"] else None})
        taps = tuple(Tap(**{**t, "shape": tuple(t["shape"]), "channels": tuple(t["channels"]) if t["channels"] else None})
                     for t in meta["outputs"])
        parts.append(Partition(spec.name, src, tuple(layers), taps))
    if partition_taps(parts) != manifest.host_ops[0].attrs["partitions"]:
        raise BundleFormatError(f"{bundle}: the netx files' source and output taps are not the partitions the "
                                "manifest's plan gives; re-export the bundle with `svformer-deploy export`")
    check_manifest_matches(bundle, manifest, lava_manifest(model, parts, manifest.checkpoint_sha256,
                                                           manifest.class_names))
    return manifest, model, parts


def _split(jobs: dict[str, tuple[Path, np.ndarray]], workers: int) -> list[list[str]]:
    """Partition names in ``workers`` groups of about equal work (input elements x steps), largest first."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(workers, len(jobs))))]
    load = [0] * len(groups)
    for name in sorted(jobs, key=lambda k: -jobs[k][1].size):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += jobs[name][1].size
    return groups


def run_lava(python: str, jobs: dict[str, tuple[Path, np.ndarray]], workdir: Path,
             runner: Path, progress: Callable[[str], None] | None = None,
             workers: int = 1) -> tuple[dict[str, np.ndarray], dict]:
    """Run ``runner`` under ``python`` on {partition: (netx path, spikes (B, T, C, H, W))}; (outputs, summary).

    The partitions are independent (each is fed recorded spikes), so ``workers`` runner processes run disjoint
    groups of them at the same time; each partition is one Lava run over all its B clips."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    procs = []
    for i, names in enumerate(_split(jobs, workers)):
        np.savez(workdir / f"lava_in{i}.npz", **{k: jobs[k][1].astype(np.int8) for k in names})
        job = {"inputs": str(workdir / f"lava_in{i}.npz"), "outputs": str(workdir / f"lava_out{i}.npz"),
               "summary": str(workdir / f"lava_summary{i}.json"),
               "partitions": [{"name": k, "netx": str(jobs[k][0])} for k in names]}
        (workdir / f"job{i}.json").write_text(json.dumps(job))
        procs.append(subprocess.Popen([python, str(runner), str(workdir / f"job{i}.json")], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir))
    logs: list[list[str]] = [[] for _ in procs]

    def drain(i: int) -> None:
        for line in procs[i].stdout:
            logs[i].append(line.rstrip())
            if progress and line.startswith("[lava-runner]"):
                progress(line.rstrip())

    threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(procs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = [(i, rc) for i, rc in enumerate(p.wait() for p in procs) if rc != 0]
    except BaseException:  # interrupted: no runner outlives the verification (they read the bundle's files)
        for p in procs:
            p.kill()
            p.wait()
        raise
    if failed:
        i, rc = failed[0]
        raise VerificationError("the Lava runner failed (exit {}):\n{}".format(rc, "\n".join(logs[i][-15:])))
    outs, summary = {}, {}
    for i in range(len(procs)):
        with np.load(workdir / f"lava_out{i}.npz", allow_pickle=False) as z:
            outs.update({k: z[k] for k in z.files})
        part = json.loads((workdir / f"lava_summary{i}.json").read_text())
        summary = {**part, "partitions": {**summary.get("partitions", {}), **part["partitions"]}}
    summary["workers"] = len(procs)
    return outs, summary


class _Accuracy:
    """Running top-1 of the float and the quantised model, batch by batch (clips are not kept)."""

    def __init__(self) -> None:
        self.n = self.float_ok = self.quant_ok = self.agree = 0

    @torch.no_grad()
    def add(self, model, quantized: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> None:
        pf = model(x).argmax(1)
        pq = quantized(x).argmax(1)
        self.n += len(y)
        self.float_ok += int((pf == y).sum())
        self.quant_ok += int((pq == y).sum())
        self.agree += int((pf == pq).sum())

    def result(self) -> dict[str, Any] | None:
        if not self.n:
            return None
        return {"clips": self.n, "top1_float": self.float_ok / self.n, "top1_quantized": self.quant_ok / self.n,
                "top1_agreement": self.agree / self.n}


@torch.no_grad()
def verify_lava(bundle: str | os.PathLike, *, data: str = "moving-digits", num_videos: int | None = None,
                lava_clips: int = 8, workers: int = 1, crop: int | str | None = "auto", clips: Tensor | None = None,
                labels: Tensor | None = None,
                batches: Iterable[tuple[Tensor, Tensor]] | None = None,
                python: str | None = None, progress: Callable[[str], None] | None = None,
                write: bool = True, data_desc: str | None = None) -> dict[str, Any]:
    """Verify a Lava bundle (see the module docstring); returns the report and writes it as
    ``verification.json`` in the bundle. Clips come from ``batches`` ((clips, labels) pairs), else from
    ``clips``/``labels``, else from ``data``'s validation split; ``lava_clips`` of them (from the first batches)
    go through Lava (one Lava run per partition over all of them, see :mod:`runner`; ``workers`` runner processes
    in parallel); the accuracy streams over all of them. ``crop`` chooses, per partition, the output neurons
    (window and channels) Lava is checked on (:func:`~svformer_deploy.exporters.lava.crop.crop_for`: ``"auto"``,
    an output window size, or ``None`` for full frame); each partition's report says which (``checked``)."""
    from svformer_deploy.exporters import eval_batches
    from svformer_deploy.exporters.lava.sideenv import lava_python

    say = progress or (lambda _m: None)
    policy = None if crop is None else crop_policy(crop)
    bundle = Path(bundle).expanduser().resolve()  # the runner subprocess runs in a temporary folder
    manifest, model, parts = load_lava_bundle(bundle)  # coverage: checked on read, operations re-derived
    python = python or lava_python(say)  # first: fail fast (and say so) if the side environment cannot be built
    with_labels = not (batches is None and clips is not None and labels is None)
    if batches is not None:
        source = {"data": data_desc or "batches given by the caller"}
    elif clips is not None:
        batches = [(clips, labels if labels is not None else torch.zeros(len(clips), dtype=torch.long))]
        source = {"data": data_desc or "clips given by the caller"}
    else:
        batches = eval_batches(data, model.config, num_videos, batch_size=16)
        source = {"data": str(data), "split": "val"}
    t0 = time.perf_counter()
    accuracy, first = _Accuracy(), []
    host_params, emulation = load_host_params(bundle), emulation_runtime(parts)

    def quantized(x: Tensor) -> Tensor:  # the bundle in the shared runner, partitions in the emulation
        return run_bundle(manifest, host_params, x, run_partition=emulation).logits

    if with_labels:
        say("Measuring the accuracy of the float and the quantised model...")
    for x, y in batches:
        if sum(len(f) for f in first) < lava_clips:
            first.append(x[:lava_clips - sum(len(f) for f in first)])
        if with_labels:
            accuracy.add(model, quantized, x, y)
    if not first:
        raise VerificationError("no clips to verify on; pass --data with a non-empty validation split")
    first = torch.cat(first)
    with record_spikes(model) as rec:
        model(first)
    inputs = {p.name: p.source.to_chw(rec.spikes[p.source.neuron]).to(torch.int8) for p in parts}  # (T, B, C, H, W)
    crops = {p.name: crop_for(p.layers, policy) for p in parts}
    report_parts = {}
    with tempfile.TemporaryDirectory(prefix="svformer-lava-") as tmp:
        jobs = {}
        for i, p in enumerate(parts):
            crop, netx = crops[p.name], bundle / manifest.partition(p.name).file
            if not crop.full_frame:  # the same integers on a smaller input: a netx file of its own
                netx = write_netx(Path(tmp) / f"crop{i}.net", crop.layers(p.layers),
                                  {"partition": p.name, "crop": crop.to_dict()})
            jobs[p.name] = (netx, crop.crop_input(inputs[p.name]).transpose(0, 1).numpy())
        cropped = sum(not c.full_frame for c in crops.values())
        say(f"Running {len(parts)} netx partitions x {len(first)} clip(s) in Lava (fixed_pt), {cropped} of them on "
            "a crop...")
        t_lava = time.perf_counter()
        lava_out, lava_summary = run_lava(python, jobs, Path(tmp), bundle / RUNNER_NAME, say, workers)
        lava_seconds = time.perf_counter() - t_lava
    for p in parts:
        crop, spikes_in = crops[p.name], inputs[p.name]
        emu_full = emulate_partition(p.layers, spikes_in)  # (T, B, C', H', W')
        emu = crop.full_output_window(emu_full)  # the compared window (all of it when full frame)
        lava = crop.crop_output_window(torch.from_numpy(lava_out[p.name]).transpose(0, 1))
        crop_mismatches = 0 if crop.full_frame else int((crop.crop_output_window(
            emulate_partition(crop.layers(p.layers), crop.crop_input(spikes_in))) != emu).sum())
        ref = p.output.to_chw(rec.spikes[p.output.neuron]).to(torch.int8)
        report_parts[p.name] = {
            "layers": len(p.layers), "input_neuron": p.source.neuron, "output_neuron": p.output.neuron,
            "checked": crop.to_dict(), "neurons": int(emu[0, 0].numel()), "neurons_full_frame": int(
                np.prod(p.layers[-1].out_shape)), "timesteps": int(emu.shape[0]), "clips": int(emu.shape[1]),
            "bit_exact": bool(torch.equal(lava, emu)) and crop_mismatches == 0,
            "clips_bit_exact": int((lava == emu).flatten(2).all(2).all(0).sum()),
            "lava_vs_emulation_mismatches": int((lava != emu).sum()),
            "crop_vs_full_frame_emulation_mismatches": crop_mismatches,
            "lava_spikes": int(lava.sum()), "emulation_spikes": int(emu.to(torch.int64).sum()),
            "input_spikes": int(jobs[p.name][1].astype(np.int64).sum()),
            "float_vs_quantized_spike_agreement": float((emu_full == ref).float().mean()),  # full frame
            "float_spikes": int(ref.to(torch.int64).sum()),
            "weight_exponents": [l.exponent for l in p.layers], "vDecay": [l.v_decay for l in p.layers],
            "clipped_weight_fraction": [l.clipped_weights for l in p.layers],
            "lava_seconds": lava_summary["partitions"][p.name]["seconds"],
            "lava_timing": {k: lava_summary["partitions"][p.name][k] for k in
                            ("lava_runs", "steps_run", "build_s", "first_step_s", "steps_s", "seconds_per_step")}}
    acc = accuracy.result() if with_labels else None
    report = {
        "target": "lava", "bundle": str(bundle), "model_name": manifest.model_name,
        "checkpoint_sha256": manifest.checkpoint_sha256, "inputs": {**source, "lava_clips": len(first)},
        "lava": {k: lava_summary[k] for k in ("lava_dl", "lava_nc", "numpy", "python")}, "python": python,
        "run_config": "Loihi2SimCfg(select_tag='fixed_pt')",
        "all_bit_exact": all(r["bit_exact"] for r in report_parts.values()),
        "lava_workers": lava_summary["workers"], "lava_seconds": round(lava_seconds, 1),
        "crop": "off" if policy is None else policy,
        "partitions_cropped": sum(not r["checked"]["full_frame"] for r in report_parts.values()),
        "partitions": report_parts, "accuracy": acc, "seconds": round(time.perf_counter() - t0, 1),
        "goal": "bit-exact agreement of Lava (fixed_pt) with the fixed-point emulation on every partition, on the "
                "output neurons each partition's 'checked' names (window and channels; all when full_frame)"}
    report["passed"] = report["all_bit_exact"]
    if write:
        atomic_write_json(bundle / VERIFICATION_NAME, report, indent=1)
    return report


def format_lava_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`verify_lava`'s report."""
    lines = [f"Lava verification of {report['bundle']} ({report['run_config']}, lava-dl {report['lava']['lava_dl']})"]
    for name, r in report["partitions"].items():
        lines.append(f"  {name:40s} {'BIT-EXACT' if r['bit_exact'] else 'MISMATCH '} "
                     f"lava/emulation mismatches {r['lava_vs_emulation_mismatches']:6d}  spikes {r['lava_spikes']:7d}  "
                     f"float agreement {r['float_vs_quantized_spike_agreement']:.4%}  [{r['checked']['description']}]")
    cropped = report["partitions_cropped"]
    scope = (f"{cropped} partition(s) checked on the window/channels shown, not all neurons" if cropped else
             "every partition checked on all its output neurons")
    lines.append(f"all partitions bit-exact: {report['all_bit_exact']} ({report['inputs']['lava_clips']} clip(s) per "
                 f"partition, one Lava run each, {report['lava_seconds']} s in Lava in {report['lava_workers']} "
                 f"runner process(es); {scope}; crop setting "
                 f"{report['crop']})")
    if report["accuracy"]:
        a = report["accuracy"]
        lines.append(f"top-1 on {a['clips']} val clips: float {a['top1_float']:.2%}, quantised {a['top1_quantized']:.2%} "
                     f"(prediction agreement {a['top1_agreement']:.2%})")
    return "\n".join(lines)
