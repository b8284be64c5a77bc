"""``--to nir``: the NIR target, one folder (as :mod:`svformer_deploy.exporters.lava` is for Lava).

=============  ==============================================================================================
module         holds
=============  ==============================================================================================
``lowering``   the plan's NIR backend: cut with ``NIR_CAPABILITIES``, partitions as ``nir.Conv2d`` / ``nir.LIF``
               graphs, host ops between them (:func:`~.lowering.lower_plan`); the bundle's graph derived
               from a stored plan by the same code (:func:`~.lowering.nir_graph`)
``export``     the bundle writer (:func:`~.export.export_nir`: manifest, ``.nir`` files, ``host_params.npz``)
``runtime``    partition runtimes: snntorch (whole graph or node by node), our reference interpreter, any
               registered :class:`~.runtime.NodeRuntime`
``verify``     the verification of a NIR bundle against PyTorch (:func:`~.verify.verify_bundle`)
``norse``      target ``nir-norse``: the same bundle verified in norse, a second NIR runtime
=============  ==============================================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from svformer_deploy.exporters import Exporter
from svformer_deploy.exporters.nir.export import export_nir
from svformer_deploy.exporters.nir.lowering import nir_graph
from svformer_deploy.exporters.nir.verify import format_report, verify_bundle

__all__ = ["EXPORTER"]


def _export(model: nn.Module, out: str | os.PathLike, **kw: Any) -> Path:
    return export_nir(model, out, **kw)[0]


EXPORTER = Exporter("nir", "NIR bundle: NIR partitions + declared host ops, verified with snntorch", _export,
                    verify_bundle, format_report, graph=nir_graph)
