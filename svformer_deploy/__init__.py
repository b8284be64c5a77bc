"""svformer-deploy: SVFormer from a PyTorch checkpoint to neuromorphic formats, with energy accounting.

Every public capability is one attribute away (``svformer_deploy.create_model``, ``svformer_deploy.export_and_verify``,
...), loaded on first use (PEP 562) so that ``import svformer_deploy`` stays light. They live in:

- :mod:`svformer_deploy.api` -- the service layer the CLI and the demo call: export and verify, evaluate, energy
  report and price, sparsity, train;
- :mod:`svformer_deploy.models` -- the model registry (``create_model``), checkpoints, spike recording;
- :mod:`svformer_deploy.data` -- the built-in moving-digits task and UCF101/HMDB51 folder datasets;
- :mod:`svformer_deploy.energy` -- operation counting, hardware profiles, baselines, energy reports;
- :mod:`svformer_deploy.exporters` -- NIR, ONNX and Lava-DL netx bundles with verification (``list_targets``);
- :mod:`svformer_deploy.chip` -- bundles onto neuromorphic chips: cores, chips, time, energy, power (``list_chips``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module defining it (one hop: ``svformer_deploy.<name>``)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("export_and_verify", "verify", "evaluate", "energy_report", "energy_price", "sparsity", "train",
                     "finetune", "import_official", "map_bundle", "verify_mapping",
                     "EvalOutcome", "EnergyReportOutcome", "PriceOutcome", "SparsityOutcome", "MapOutcome",
                     "MappingCheck"),
                    "svformer_deploy.api"),
    **dict.fromkeys(("create_model", "list_models", "get_config", "register_model", "SVFormerConfig", "SVFormer",
                     "load_checkpoint", "save_checkpoint", "record_spikes", "forward_hooks", "plif_step"),
                    "svformer_deploy.models"),
    **dict.fromkeys(("list_targets", "get_exporter", "ExportResult"), "svformer_deploy.exporters"),
    **dict.fromkeys(("list_chips", "load_chip"), "svformer_deploy.chip.arch"),
    **dict.fromkeys(("list_profiles", "get_profile", "register_profile", "count_ops"), "svformer_deploy.energy"),
    "list_baselines": "svformer_deploy.energy.baselines",
    **dict.fromkeys(("iter_eval_videos", "build_dataset"), "svformer_deploy.data"),
    "TrainConfig": "svformer_deploy.training",
    **dict.fromkeys(("run_demo", "demo_steps"), "svformer_deploy.demo"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access (PEP 562) and cache it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'svformer_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
