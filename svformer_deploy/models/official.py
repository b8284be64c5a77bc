"""Import weights trained with the official SVFormer code (``yult0821/SVFormer``, class ``Uniformer2d_psnn_try``).

The official code saves SlowFast checkpoints (``.pyth``): a dict whose ``model_state`` is the state dict
(optionally with a ``module.`` prefix from DistributedDataParallel). Its parameter names differ from ours; the
mapping below is first-match, one rule per reference module, e.g. ``blocks1.0.attn`` (the 5x5 depthwise conv of a
local block) -> ``blocks1.0.dwconv``, ``blocks3.0.attn.norm1`` -> ``blocks3.0.attn.bn_qkv``. The reference stores
spikingjelly's PLIF parameter as ``<neuron>.w``, which is our ``PLIF.w`` with the same meaning (1/tau = sigmoid(w)).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svformer_deploy._paths import require_file
from svformer_deploy.errors import CheckpointFormatError, CheckpointNotFoundError
from svformer_deploy.models._registry import create_model
from svformer_deploy.models.checkpoint import load_state_dict_checked, safe_load
from svformer_deploy.models.svformer import SVFormer

__all__ = ["OFFICIAL_KEY_RULES", "ImportReport", "official_to_ours", "import_official"]

OFFICIAL_KEY_RULES: list[tuple[str, str]] = [
    (r"^patch_embed(\d)\.proj\.", r"patch_embed\1.conv."),
    (r"^patch_embed(\d)\.norm\.", r"patch_embed\1.bn."),
    (r"^patch_embed(\d)\.in_lif\.", r"patch_embed\1.lif."),
    (r"^(blocks[12]\.\d+)\.act1\.", r"\1.lif."),
    (r"^(blocks[12]\.\d+)\.attn\.", r"\1.dwconv."),
    (r"^(blocks[12]\.\d+)\.norm2\.", r"\1.bn."),
    (r"^(blocks\d\.\d+\.mlp)\.act([12])\.", r"\1.lif\2."),
    (r"^(blocks\d\.\d+\.mlp)\.norm([12])\.", r"\1.bn\2."),
    (r"^(blocks[34]\.\d+\.attn)\.in_lif\.", r"\1.lif_in."),
    (r"^(blocks[34]\.\d+\.attn)\.norm1\.", r"\1.bn_qkv."),
    (r"^(blocks[34]\.\d+\.attn)\.norm2\.", r"\1.bn_proj."),
    (r"^(blocks[34]\.\d+\.attn)\.([qkv])_lif\.", r"\1.lif_\2."),
    (r"^(blocks[34]\.\d+\.attn)\.proj_lif\.", r"\1.lif_proj."),
    (r"^lplif\.", "local_path.lif."),
    (r"^lpDWConv\.", "local_path.dwconv."),
    (r"^lpPWConv\.", "local_path.pwconv."),
    (r"^lpBN\.", "local_path.bn."),
    (r"^lif_bf_head\.", "head.lif."),
    (r"^dwconv_bf_head\.", "head.conv3d."),
    (r"^dwconv_bn\.", "head.bn."),
    (r"^head\.", "head.fc."),
]
_RULES = [(re.compile(p), r) for p, r in OFFICIAL_KEY_RULES]


def official_to_ours(key: str) -> str:
    """Our parameter name for a reference parameter name (unchanged when no rule applies)."""
    key = key.removeprefix("module.")
    for pattern, repl in _RULES:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


@dataclass
class ImportReport:
    """What :func:`import_official` matched; ``ignored`` lists file tensors with no counterpart in our model."""

    matched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    inferred: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"matched {len(self.matched)} tensors; inferred {self.inferred}"
        return s + (f"; ignored {len(self.ignored)} file tensors: {self.ignored}" if self.ignored else "")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    require_file(path, "official checkpoint", "pass the .pyth file saved by the official SVFormer code",
                 CheckpointNotFoundError)
    obj = safe_load(path, wrong_file="pass the .pyth file saved by the official SVFormer code",
                    damaged="re-download it; a pickled training checkpoint must first be re-saved in the official "
                            "environment as torch.save({'model_state': ckpt['model_state']}, path)")
    if isinstance(obj, dict):
        for key in ("model_state", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(f"{path} has no state dict (expected a 'model_state' dict of tensors, "
                                    "as SlowFast saves); pass the official .pyth checkpoint")
    return obj


def import_official(path: str | os.PathLike, name: str = "svformer_ucf101",
                    **overrides: Any) -> tuple[SVFormer, ImportReport]:
    """Build ``name`` (with ``overrides``) and load a reference state dict into it.

    ``num_classes``, ``num_frames`` and ``img_size`` are inferred from the file's tensor shapes unless given.
    Raises :class:`~svformer_deploy.errors.ShapeMismatchError` when any of our tensors has no counterpart or a
    different shape; tensors of the file that we do not use are listed in the report.
    """
    from svformer_deploy.models._registry import get_config

    path = Path(path)
    raw = _read_state_dict(path)
    sd = {official_to_ours(k): v for k, v in raw.items()}
    base = get_config(name, **overrides)
    inferred: dict[str, Any] = {}
    if "head.fc.weight" in sd:
        inferred["num_classes"] = sd["head.fc.weight"].shape[0]
    if "patch_embed1.bn.weight" in sd and base.bn == "per_timestep":
        inferred["num_frames"] = sd["patch_embed1.bn.weight"].numel() // base.embed_dims[0]
    if "head.conv3d.weight" in sd:
        inferred["img_size"] = sd["head.conv3d.weight"].shape[-1] * 32
    inferred = {k: v for k, v in inferred.items() if k not in overrides}
    model = create_model(name, **inferred, **overrides)
    own = model.state_dict()
    report = ImportReport(matched=sorted(k for k in sd if k in own), ignored=sorted(k for k in sd if k not in own),
                          inferred=inferred)
    load_state_dict_checked(model, {k: v for k, v in sd.items() if k in own}, str(path),
                            unmatched=report.ignored if len(report.matched) < len(own) else None)
    return model.eval(), report
