"""``--to onnx``: the whole model as one ONNX graph for a fixed T and frame size, with a dynamic batch axis,
written as an export bundle like every target (:mod:`svformer_deploy.exporters.bundle`): ``model.onnx`` is
its one partition (per clip: input ``clips`` (B, C, T, H, W), output ``logits``), covering every operation.

Each PLIF layer is one standard ``Scan`` over the T frames whose body is the model's neuron step (state ``v``;
``h = v + (x - v) * inv_tau`` as separate Sub, Mul, Add; spikes ``GreaterOrEqual(h, V_th)`` cast to float;
hard reset by ``Where``), so the graph computes exactly the eval-mode forward with one node per layer instead
of T unrolled copies. The tracer records each layer as one placeholder node whose forward is the model's fused
kernel (tracing runs the model once, not T x 5 eager ops per layer), replaced by the ``Scan`` before saving.
Model config, checkpoint hash, class names and the input contract are also stored in ``metadata_props``, so
the file stays self-describing when taken out of its bundle.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svformer_deploy._atomic import atomic_write_json
from svformer_deploy.errors import BundleFormatError, VerificationError
from svformer_deploy.exporters import Exporter, read_bundle
from svformer_deploy.exporters.bundle import (
    VERIFICATION_NAME,
    Graph,
    Manifest,
    PartitionSpec,
    check_bundle_files,
    clip_signals,
    check_manifest_matches,
    write_bundle,
)
from svformer_deploy.exporters.plan import (NODE_KINDS, Capabilities, Plan, check_supported, cut, lower,
                                            partition_coverage)
from svformer_deploy.models.neurons import PLIF, plif_multistep

__all__ = ["OPSET", "ONNX_FILE", "ONNX_CAPABILITIES", "export_onnx", "onnx_graph", "verify_onnx", "onnx_metadata"]

OPSET = 17

_TORCHSCRIPT_EXPORTER = (
    {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {})
"""``torch.onnx.export`` chooses its TorchScript exporter with ``dynamo=False`` since torch 2.5 (and defaults to
the dynamo one in newer releases); torch 2.4 has only the TorchScript exporter and no such argument."""
ONNX_FILE = "model.onnx"
ONNX_CAPABILITIES = Capabilities("onnx", frozenset(NODE_KINDS) - {"input"}, residual_joins=True,
                                 time_varying_weights=True)
"""ONNX holds the whole plan in one graph (the model itself, for a fixed T): every node kind, per-timestep
BatchNorm exactly."""


_PLIF_DOMAIN = "svformer_deploy"
"""Custom-op domain of the placeholder node the tracer writes for each neuron layer; :func:`_plif_to_scan`
replaces every such node by a standard ``Scan``, so the saved graph holds standard ONNX operators only."""


class _TracedPLIF(torch.autograd.Function):
    """PLIF over the T frames of ``x`` as one node for the ONNX tracer: the forward is the model's own
    :func:`~svformer_deploy.models.neurons.plif_multistep` (fused kernel, identical spikes), so tracing costs
    one fused pass per layer instead of T x 5 recorded elementwise ops; :meth:`symbolic` writes a placeholder
    ``svformer_deploy::PLIF`` node carrying ``inv_tau`` and ``V_th``, turned into a ``Scan`` after export."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, inv_tau: float, v_threshold: float) -> Tensor:  # type: ignore[override]
        return plif_multistep(x, w, v_threshold)

    @staticmethod
    def symbolic(g, x, w, inv_tau: float, v_threshold: float):  # noqa: ANN001, ANN205
        rank = x.type().dim()  # (T, ...): the Scan body's tensors have one dimension less
        out = g.op(f"{_PLIF_DOMAIN}::PLIF", x, inv_tau_f=inv_tau, v_threshold_f=v_threshold,
                   rank_i=-1 if rank is None else rank)
        out.setType(x.type())
        return out


class _ScanPLIF(nn.Module):
    """Inference-only PLIF for export: ``inv_tau = sigmoid(w)`` in float32, taken as the constant the model's
    kernel multiplies by (the training module's autograd.Function is opaque to the tracer)."""

    def __init__(self, src: PLIF) -> None:
        super().__init__()
        self.w = src.w
        self.v_threshold = src.v_threshold

    def forward(self, x: Tensor) -> Tensor:
        inv_tau = float(torch.sigmoid(self.w.detach()).to(torch.float32))
        return _TracedPLIF.apply(x, self.w, inv_tau, float(self.v_threshold))


def _inference_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, PLIF):
            parent = m.get_submodule(name.rsplit(".", 1)[0]) if "." in name else m
            setattr(parent, name.rsplit(".", 1)[-1], _ScanPLIF(mod))
    return m


def _plif_body(inv_tau: float, v_threshold: float, rank: int | None = None):  # noqa: ANN202
    """The ``Scan`` body of one PLIF step, :func:`~svformer_deploy.models.neurons.plif_step` in ONNX:
    state ``v``, scan input ``x``; ``h = v + (x - v) * inv_tau`` (separate Sub, Mul, Add: rounded as the
    model rounds), ``s = float(h >= V_th)``, ``v' = where(h >= V_th, 0, h)``; outputs ``v'`` (state) and ``s``
    (stacked over T by the Scan). ``rank``: the rank of one step's tensor, declared (dims unnamed) on the body's
    inputs and outputs: onnxruntime before 1.24 refuses a Scan body whose outputs carry no shape."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: float):  # noqa: ANN202
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32)))

    nodes = [const("inv_tau", inv_tau), const("v_th", v_threshold), const("zero", 0.0),
             helper.make_node("Sub", ["x", "v"], ["d"]), helper.make_node("Mul", ["d", "inv_tau"], ["m"]),
             helper.make_node("Add", ["v", "m"], ["h"]), helper.make_node("GreaterOrEqual", ["h", "v_th"], ["fired"]),
             helper.make_node("Cast", ["fired"], ["s"], to=TensorProto.FLOAT),
             helper.make_node("Where", ["fired", "zero", "h"], ["v_next"])]
    shape = None if rank is None else [None] * rank

    def io(name: str):  # noqa: ANN202
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    return helper.make_graph(nodes, "plif_step", [io("v"), io("x")], [io("v_next"), io("s")])


def _plif_to_scan(proto) -> int:  # noqa: ANN001
    """Replace every ``svformer_deploy::PLIF`` placeholder in ``proto`` (in place) by ``V0 = zeros(x.shape[1:])``
    and a ``Scan`` over axis 0 (time) with :func:`_plif_body`, named ``<layer scope>/Scan``; drop the custom
    domain, and the intermediate shapes the tracer inferred through the placeholders (it gives the outputs of
    different layers the same symbolic dims), leaving them to ONNX shape inference. Returns the number of
    layers replaced."""
    import numpy as np
    from onnx import helper, numpy_helper

    nodes, n = [], 0
    for node in proto.graph.node:
        if node.domain != _PLIF_DOMAIN:
            nodes.append(node)
            continue
        attrs = {a.name: a.f if a.type == a.FLOAT else a.i for a in node.attribute}
        scope, x, s = node.name.rsplit("/", 1)[0], node.input[0], node.output[0]
        shape, v0 = f"{scope}/plif_state_shape", f"{scope}/plif_v0"
        rank = attrs["rank"] - 1 if attrs.get("rank", -1) > 0 else None  # one step's tensor: (T, ...) less T
        nodes += [helper.make_node("Shape", [x], [shape], name=f"{scope}/Shape", start=1),
                  helper.make_node("ConstantOfShape", [shape], [v0], name=f"{scope}/ConstantOfShape",
                                   value=numpy_helper.from_array(np.zeros(1, np.float32))),
                  helper.make_node("Scan", [v0, x], [f"{scope}/plif_v_last", s], name=f"{scope}/Scan",
                                   num_scan_inputs=1, body=_plif_body(attrs["inv_tau"], attrs["v_threshold"], rank))]
        n += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.graph.value_info[:]
    keep = [o for o in proto.opset_import if o.domain != _PLIF_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return n


def onnx_metadata(model: nn.Module, checkpoint_sha256: str, class_names: list[str] | None,
                  checkpoint_path: str = "") -> dict[str, str]:
    from svformer_deploy import __version__

    cfg = model.config
    return {
        "producer": f"svformer-deploy {__version__}",
        "model_name": cfg.name,
        "config_json": json.dumps(cfg.to_dict()),
        "checkpoint_sha256": checkpoint_sha256,
        "class_names_json": json.dumps(class_names),
        "input": f"clips (batch, {cfg.in_chans}, {cfg.num_frames}, {cfg.img_size}, {cfg.img_size}) = (B, C, T, H, W), "
                 f"normalised with mean {list(cfg.mean)} and std {list(cfg.std)}; batch axis dynamic",
        "output": f"logits (batch, {cfg.num_classes})",
        "opset": str(OPSET),
        "checkpoint_path": checkpoint_path,
        "neuron": "PLIF as one ONNX Scan over T frames: h = v + (x - v) / tau; s = h >= v_th; v = h (1 - s)",
    }


def onnx_graph(plan: Plan, config: dict) -> Graph:
    """The graph of an ONNX bundle holding ``plan``: one per-clip partition, ``model.onnx`` (clips -> logits),
    covering every operation of the plan."""
    (whole,) = cut(plan, ONNX_CAPABILITIES)
    return Graph(
        signals=clip_signals(plan),
        partitions=[PartitionSpec("model", ONNX_FILE, {"clips": "frames"}, {"logits": "logits"},
                                  partition_coverage(plan, whole), time="per_clip")],
        host_ops=[], schedule=[{"partition": "model"}], graph_input="frames", graph_output="logits")


def _manifest(model: nn.Module, checkpoint_sha256: str, checkpoint_path: str,
              class_names: list[str] | None) -> Manifest:
    from svformer_deploy import __version__

    cfg = model.config
    plan = lower(model, with_params=False)
    return Manifest(
        target="onnx", model_name=cfg.name, config=cfg.to_dict(), checkpoint_sha256=checkpoint_sha256, dt=1.0,
        discretization={"neuron": onnx_metadata(model, "", None)["neuron"], "opset": OPSET,
                        "timestep": "one video frame per timestep, state 0 at the first frame of every clip"},
        plan=plan, graph=onnx_graph(plan, cfg.to_dict()), class_names=class_names,
        checkpoint_path=checkpoint_path, created_by=f"svformer-deploy {__version__}")


def export_onnx(model: nn.Module, out: str | os.PathLike, *, checkpoint_sha256: str, checkpoint_path: str = "",
                class_names: list[str] | None = None, force: bool = False, approximate_bn: bool = False) -> Path:
    """Write ``model`` as an ONNX bundle (opset :data:`OPSET`) atomically; refuse an existing ``out`` without
    ``force``. Returns the bundle directory.

    ONNX holds per-timestep BatchNorm exactly (the graph is the model's own, for a fixed T), so ``approximate_bn``
    has no effect here."""
    import onnx

    check_supported(model)
    cfg = model.config
    m = _inference_copy(model)
    example = torch.zeros(1, *cfg.input_shape)

    def write(tmp: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow
            torch.onnx.export(m, (example,), str(tmp), input_names=["clips"], output_names=["logits"],
                              dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, **_TORCHSCRIPT_EXPORTER,
                              custom_opsets={_PLIF_DOMAIN: 1})
        proto = onnx.load(str(tmp))
        _plif_to_scan(proto)
        for k, v in onnx_metadata(model, checkpoint_sha256, class_names, checkpoint_path).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))

    manifest = _manifest(model, checkpoint_sha256, checkpoint_path, class_names)
    return write_bundle(out, manifest, {ONNX_FILE: write}, force=force)


def _spike_outputs(proto, model: nn.Module) -> dict[str, str]:
    """ONNX tensor name of every neuron layer's stacked (T, B, ...) spikes: the scan output of the one Scan in
    its scope."""
    from svformer_deploy.models import iter_neurons

    out = {}
    for name, _ in iter_neurons(model):
        hits = [n.output[1] for n in proto.graph.node
                if n.op_type == "Scan" and n.name.rsplit("/", 1)[0].strip("/").replace("/", ".") == name]
        if len(hits) == 1:
            out[name] = hits[0]
    return out


def verify_onnx(bundle: str | os.PathLike, model: nn.Module, batches, write: bool = True,
                data_desc: str = "") -> dict[str, Any]:
    """Check the bundle (manifest, SHA-256 of ``model.onnx``, its config against ``model``), then
    ``onnx.checker.check_model(full_check=True)``, then onnxruntime vs PyTorch logits on ``batches`` of
    (clips, labels or None). Writes ``verification.json`` into the bundle with ``write``.

    When a batch's logits differ by more than 1e-4, the model is run again recording its spikes and
    near-threshold margins, and the spikes onnxruntime computed (the same graph with every neuron layer's
    spike tensor exposed as an extra output) are compared with them to find the first divergence:
    verdict ``"threshold"`` if it starts at neurons within ``NEAR_THRESHOLD`` of V_th in the model (float
    rounding of a different conv implementation, then propagated), else ``"failed"``.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    from svformer_deploy.exporters import LOGIT_TOLERANCE
    from svformer_deploy.exporters.compare import first_divergence, record_ties
    from svformer_deploy.models import record_spikes

    bundle = Path(bundle)
    manifest = read_bundle(bundle)
    if manifest.target != "onnx":
        raise BundleFormatError(f"{bundle} was exported --to {manifest.target}, not --to onnx; verify it with "
                                f"`--target {manifest.target}`")
    check_bundle_files(bundle, manifest)
    check_manifest_matches(bundle, manifest, _manifest(model, manifest.checkpoint_sha256, manifest.checkpoint_path,
                                                        manifest.class_names))
    path = bundle / manifest.partition("model").file
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise VerificationError(f"onnx.checker refused {path}: {err}") from err
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    proto = onnx.load(str(path))
    spike_names = _spike_outputs(proto, model)
    probe = None
    max_diff, n, same, correct_m, correct_o, n_lab, n_off = 0.0, 0, 0, 0, 0, 0, 0
    divergences = []
    model = model.eval()
    for clips, labels in batches:
        with torch.no_grad():
            ref = model(clips)
        feed = {"clips": clips.numpy().astype(np.float32)}
        got = torch.from_numpy(sess.run(["logits"], feed)[0])
        diff = (got - ref).abs().amax(dim=1)
        max_diff = max(max_diff, float(diff.max()))
        if (diff > LOGIT_TOLERANCE).any():
            n_off += int((diff > LOGIT_TOLERANCE).sum())
            with torch.no_grad(), record_spikes(model) as rec, record_ties(model) as margins:
                model(clips)  # the spikes and margins to classify the miss: only recorded for a batch that misses
            if probe is None:
                p2 = onnx.load(str(path))
                for tensor in spike_names.values():
                    p2.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
                probe = ort.InferenceSession(p2.SerializeToString(), providers=["CPUExecutionProvider"])
            names = list(spike_names)
            outs = probe.run([spike_names[k] for k in names], feed)
            refs = {k: rec.spikes[k].reshape(outs[i].shape) for i, k in enumerate(names)}
            gots = {k: torch.from_numpy(outs[i]) for i, k in enumerate(names)}
            masks = {k: tuple(m.reshape(outs[i].shape) for m in margins[k]) for i, k in enumerate(names)}
            d = first_divergence(names, refs, gots, masks)
            divergences.append({"batch_first_clip": n, **(d or {"layer": None, "explained": False})})
        n += clips.shape[0]
        same += int((got.argmax(1) == ref.argmax(1)).sum())
        if labels is not None:
            n_lab += len(labels)
            correct_m += int((ref.argmax(1) == labels).sum())
            correct_o += int((got.argmax(1) == labels).sum())
    if n == 0:
        raise VerificationError("no clips to verify on; check --data and --videos")
    meta = {p.key: p.value for p in proto.metadata_props}
    exact = max_diff <= LOGIT_TOLERANCE
    verdict = "exact" if exact else ("threshold" if divergences and all(d["explained"] for d in divergences)
                                     else "failed")
    report = {"bundle": str(bundle), "file": str(path), "opset": OPSET, "checker_full_check": True, "data": data_desc,
              "clips": n,
              "logits_max_abs_diff": max_diff, "clips_off_tolerance": n_off, "top1_agreement": same / n,
              "top1_model": correct_m / n_lab if n_lab else None, "top1_onnx": correct_o / n_lab if n_lab else None,
              "onnxruntime": ort.__version__, "metadata_keys": sorted(meta),
              "spike_layers_probed": len(spike_names), "first_divergences": divergences,
              "goal": "logits within 1e-4 of PyTorch", "goal_met": exact, "verdict": verdict,
              "passed": verdict != "failed"}
    if write:
        atomic_write_json(bundle / VERIFICATION_NAME, report, indent=1)
    return report


def format_onnx_report(r: dict[str, Any]) -> str:
    lines = [f"{r['file']}: onnx.checker full_check passed (opset {r['opset']})",
             f"onnxruntime {r['onnxruntime']} vs PyTorch on {r['clips']} clips: logits max |diff| "
             f"{r['logits_max_abs_diff']:.3g}, top-1 agreement {100 * r['top1_agreement']:.2f}%"]
    if r.get("top1_model") is not None:
        lines.append(f"top-1 accuracy: model {100 * r['top1_model']:.2f}%, onnx {100 * r['top1_onnx']:.2f}%")
    for d in r["first_divergences"]:
        lines.append(f"clips from #{d['batch_first_clip']}: first spike divergence "
                     + (f"{d['layer']} t={d['timestep']}, {d['neurons']} neuron(s), {d['at_ties']} at ties, "
                        f"{d['near_threshold']} near threshold" if d.get("layer") else "none found")
                     + ("" if d["explained"] else " -- NOT explained by threshold rounding"))
    lines.append(f"{r['clips_off_tolerance']} of {r['clips']} clips have logits off by more than 1e-4")
    lines.append(f"verdict: {r['verdict']} -- " + {
        "exact": "goal met: logits within 1e-4 on every clip",
        "threshold": "goal NOT met on every clip: each miss starts at neurons at/near threshold (float rounding "
                     "of onnxruntime's kernels), then propagates; no graph error found",
        "failed": "FAILED: a difference that threshold rounding does not explain"}[r["verdict"]])
    return "\n".join(lines)


def _exporter():
    return Exporter("onnx", f"ONNX (opset {OPSET}), fixed T and frame size, dynamic batch, checked with onnxruntime",
                    export_onnx, lambda path, model, batches, data_desc="": verify_onnx(path, model, batches,
                                                                                          data_desc=data_desc),
                    format_onnx_report, graph=onnx_graph)


EXPORTER = _exporter()
