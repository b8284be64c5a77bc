"""``verify --target nir-norse``: a NIR bundle run by a second, independent NIR implementation, norse.

The bundle is the one ``export --to nir`` writes; nothing about it changes. Each partition node is imported by
norse's public ``norse.torch.from_nir`` (one node per graph, like ``"snntorch-nodes"``; our executor wires and
sums the edges), host operations run as for snntorch, and the comparison with PyTorch is the same report
(:func:`svformer_deploy.exporters.nir.verify.verify_bundle`), written as ``verification.nir-norse.json``.

Why norse (and not sinabs or rockpool). The bundle's LIF nodes are the forward-Euler form of the PLIF
(``tau = tau_plif * dt``, ``r = 1``, ``v_leak = 0``, ``v_reset = 0``, ``dt`` in the manifest). norse 1.1.0 maps
``nir.LIF`` to ``LIFBoxCell`` and integrates it with the dt its caller passes::

    v' = v + dt * (1 / tau) * (I + v_leak - v) = V + (X - V) / tau_plif     (PLIF's charge, decay_input)
    z  = v' - v_th > 0;   v = (1 - z) v' + z v_reset = hard reset to 0       (V_th unscaled)

which is PLIF's discretisation step for step; the only difference is the strict ``>`` at ``H == V_th`` (as in
every NIR runtime), which the report counts as ties. sinabs 3.1.3's ``from_nir`` takes ``tau`` as a number of
timesteps (our dt-scaled tau then decays to zero every step), imports LIF with ``norm_input=False`` (no
decay_input) and an exponential decay ``exp(-1/tau)``; rockpool's LIF also decays by ``exp(-dt/tau)`` with a
subtractive reset. Neither can reproduce PLIF's update from the bundle without changing the bundle.
snntorch, the first runtime, instead rescales the threshold (``mem > V_th tau / dt`` on ``mem = tau H``), so the
two runtimes check the bundle by different arithmetic.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters import Exporter
from svformer_deploy.exporters.nir.runtime import NodeRuntime, register_node_runtime
from svformer_deploy.exporters.nir.verify import format_report, verify_bundle

__all__ = ["EXPORTER", "NORSE_RUNTIME", "REPORT_NAME"]

REPORT_NAME = "verification.nir-norse.json"


class _NorseNode:
    """One NIR node imported by ``norse.torch.from_nir``, stepped with its state carried between timesteps."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.state = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, x: Tensor) -> Tensor:
        y, self.state = self.module(x, self.state)
        return y.detach()


def _build(name: str, node, dt: float) -> _NorseNode:
    import warnings

    import nir
    import numpy as np

    try:
        from norse.torch import from_nir
    except ImportError as err:
        raise VerificationError("target nir-norse needs norse (pip install norse==1.1.0)") from err
    in_shape = np.array(next(iter(node.input_type.values())))
    out_shape = np.array(next(iter(node.output_type.values())))
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": in_shape}), "node": node,
                            "output": nir.Output({"output": out_shape})},
                     edges=[("input", "node"), ("node", "output")], type_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch deprecation notices
        return _NorseNode(from_nir(g, ignore_warnings=True, dt=dt))


NORSE_RUNTIME = register_node_runtime(NodeRuntime(
    "norse", _build, ("Affine", "Linear", "Conv2d", "LIF"),
    "every node imported by norse.torch.from_nir (norse 1.1.0, LIFBoxCell with the bundle's dt), edges wired and "
    "summed by svformer-deploy"))


def _verify(path: str | os.PathLike, model: nn.Module, batches, data_desc: str = "") -> dict[str, Any]:
    return verify_bundle(path, model, batches, runtime="norse", data_desc=data_desc, report_name=REPORT_NAME)


EXPORTER = Exporter("nir-norse", "NIR bundle (from --to nir) verified in norse, a second NIR runtime", None,
                    _verify, format_report, reads="nir", report_name=REPORT_NAME)
