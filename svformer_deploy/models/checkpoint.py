"""Checkpoints: one file holds the weights, the model config and everything needed to use it.

Format (version :data:`FORMAT_VERSION`), a dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)`` -- only tensors and plain Python containers, never pickled objects::

    {"format": "svformer-deploy-checkpoint", "format_version": 1,
     "model_name": str, "config": {...SVFormerConfig fields...},
     "state_dict": {name: Tensor}, "meta": {...JSON-able: class_names, training command, metrics...},
     "extra": {...tensors/containers: optimizer, scheduler, RNG state for --resume (optional)...}}

Writes are atomic: the file is written next to the target and renamed over it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svformer_deploy._atomic import atomic_write
from svformer_deploy.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigError,
    NonFiniteWeightsError,
    ShapeMismatchError,
    UnsafeCheckpointError,
)
from svformer_deploy.models.config import SVFormerConfig

__all__ = ["FORMAT_VERSION", "WRAPPER_PREFIXES", "unwrap_model", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "load_state_dict_checked", "file_sha256", "atomic_write", "require_checkpoint", "safe_load"]

FORMAT = "svformer-deploy-checkpoint"
FORMAT_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (recorded in exports to tie them to their checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_config(model: nn.Module) -> SVFormerConfig:
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, SVFormerConfig):
        raise ConfigError(f"{type(model).__name__} has no SVFormerConfig in .config; build models with create_model()")
    return cfg


WRAPPER_PREFIXES = {"module.": "DistributedDataParallel / DataParallel", "_orig_mod.": "torch.compile"}
"""State-dict key prefixes that wrappers add, and the wrapper that adds each."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside any nesting of ``torch.compile`` (``._orig_mod``) and DDP / DataParallel
    (``.module``) wrappers, so that its state-dict keys carry no wrapper prefix."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _wrapper_note(keys: list[str]) -> str:
    """' (they carry the wrapper prefix '_orig_mod.' of torch.compile; ...)' when unmatched keys carry one."""
    for prefix, wrapper in WRAPPER_PREFIXES.items():
        if keys and sum(prefix in k for k in keys) * 2 >= len(keys):
            return (f"; these keys carry the wrapper prefix {prefix!r} of {wrapper}: save the unwrapped model "
                    f"(save_checkpoint does) or strip {prefix!r} from the keys")
    return ""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None,
                    **meta: Any) -> Path:
    """Write ``model`` (weights and config) and JSON-able ``meta`` (class names, metrics, command...) atomically.

    ``extra`` holds tensors and plain containers needed to resume training (optimizer state, RNG states).
    Wrappers (``torch.compile``, DDP) are unwrapped first: the keys never carry ``_orig_mod.`` or ``module.``.
    """
    module = unwrap_model(model)  # torch.compile / DDP add prefixes to the state-dict keys
    cfg = _model_config(module)
    try:
        json.dumps(meta)
    except TypeError as err:
        raise ConfigError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": cfg.name,
        "config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "meta": meta,
        "extra": extra or {},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of every file ``torch.save`` writes (a zip archive since PyTorch 1.6)."""


def shipped_checkpoint_hint() -> str:
    """'the shipped one, <its real path>' (or how to get it back when it is missing), for messages."""
    from svformer_deploy.assets import default_checkpoint

    try:
        return f"the shipped one, {default_checkpoint()}"
    except CheckpointNotFoundError:
        return "the shipped one (missing here: reinstall svformer-deploy)"


def require_checkpoint(path: str | os.PathLike) -> Path:
    """``Path(path)`` when it is a file; else the one message every command gives for a checkpoint path that does
    not exist (:class:`CheckpointNotFoundError`, offering the shipped checkpoint's real path) or is a folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist; check the path, train one with "
                                      f"`svformer-deploy train`, or use {shipped_checkpoint_hint()}")
    if path.is_dir():
        raise CheckpointFormatError(f"checkpoint {path} is a folder, not a file; pass the .pt file inside it")
    return path


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def safe_load(path: Path, *, wrong_file: str, damaged: str) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors and plain containers only: no code is unpickled), with
    every way an untrusted file can fail mapped to one error naming the file and its fix: a pickled class or
    function is refused as :class:`UnsafeCheckpointError`; a file that does not parse is a
    :class:`CheckpointFormatError` saying which of two things it is -- not a PyTorch checkpoint at all (not a zip
    archive, e.g. a text file renamed .pt; fix ``wrong_file``), or a zip archive that is truncated or corrupt
    (fix ``damaged``). Files in PyTorch's pre-1.6 (non-zip) format still load."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # the safe unpickler met a class/function reference: code, not data
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects that are not plain tensors or containers; it was refused "
                "(loading it could run arbitrary code). Re-save it as a state dict (torch.save(model.state_dict())) "
                "and import it with import_official(), or save it with save_checkpoint()") from err
        cause = err
    except Exception as err:  # noqa: BLE001 - a parser of untrusted bytes fails in many ways (KeyError, IndexError...)
        cause = err
    if not _is_zip(path):
        what = "an empty file" if path.stat().st_size == 0 else "not a zip archive"
        raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint ({what}); {wrong_file}") from cause
    raise CheckpointFormatError(f"{path} is a truncated or corrupt archive (a PyTorch file cut short or damaged); "
                                f"{damaged}") from cause


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Safely read and validate the raw checkpoint dict (``weights_only=True``: no code is unpickled)."""
    path = require_checkpoint(path)
    payload = safe_load(path, wrong_file="pass a checkpoint written by svformer-deploy (train, finetune, "
                                         f"import-official), e.g. {shipped_checkpoint_hint()}",
                        damaged="re-copy it from where it came from, or re-train it")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointFormatError(
            f"{path} is a PyTorch file but not an svformer-deploy checkpoint (no config); for a checkpoint of the "
            "official SVFormer code use `svformer-deploy import-official` (import_official()), else pass a "
            f"checkpoint written by svformer-deploy, e.g. {shipped_checkpoint_hint()}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointFormatError(f"{path} has checkpoint format version {payload.get('format_version')}, this "
                                    f"svformer-deploy reads version {FORMAT_VERSION}; upgrade svformer-deploy")
    for key in ("config", "state_dict", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointFormatError(f"{path} lacks its '{key}' section; the file is damaged: re-save it")
    return payload


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable svformer-deploy checkpoint (what ``--force`` may replace with another)."""
    try:
        read_checkpoint(path)
    except (CheckpointFormatError, CheckpointNotFoundError, UnsafeCheckpointError):
        return False
    return True


def _listed(keys: list[str], n: int = 5) -> str:
    return f"{len(keys)} {keys[:n]}{'...' if len(keys) > n else ''}"


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                            unmatched: list[str] | None = None) -> None:
    """Load weights strictly, naming every missing, unexpected, mis-shaped or non-finite tensor.

    ``unmatched``: keys of the file the caller left out of ``state_dict`` (they are named as unexpected); when
    the unexpected keys carry a wrapper prefix (:data:`WRAPPER_PREFIXES`), the message names it and the fix.
    """
    own = unwrap_model(model).state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted((set(state_dict) - set(own)) | set(unmatched or ()))
    if missing or unexpected:
        raise ShapeMismatchError(f"{source}: weights do not match the model config (missing {_listed(missing)}, "
                                 f"unexpected {_listed(unexpected)})"
                                 f"{_wrapper_note(unexpected) or '; the file config and weights disagree'}")
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ShapeMismatchError(f"{source}: {len(bad)} tensor(s) have the wrong shape ({'; '.join(bad[:3])}); "
                                 "the weights were trained for another config (num_classes, T, widths?)")
    nonfinite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise NonFiniteWeightsError(f"{source}: NaN or Inf in {len(nonfinite)} tensor(s) ({', '.join(nonfinite[:3])}); "
                                    "training diverged: use an earlier checkpoint or lower the learning rate")
    unwrap_model(model).load_state_dict(state_dict, strict=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    ) -> tuple["SVFormer", dict[str, Any]]:  # noqa: F821
    """Rebuild the model from the file alone. Returns ``(model in eval mode, meta)``.

    ``meta`` is the JSON-able metadata saved with the weights plus ``"model_name"``, ``"config"``,
    ``"sha256"`` (of the file) and ``"extra"`` (resume state, may be empty).
    """
    from svformer_deploy.models._registry import create_model

    payload = read_checkpoint(path)
    cfg = SVFormerConfig.from_dict(payload["config"])
    model = create_model(cfg)
    load_state_dict_checked(model, payload["state_dict"], str(path))
    model.eval().to(map_location)
    meta = dict(payload["meta"])
    meta.update(model_name=payload["model_name"], config=payload["config"], sha256=file_sha256(path),
                extra=payload.get("extra", {}))
    return model, meta
