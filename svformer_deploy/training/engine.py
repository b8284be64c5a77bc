"""The training engine: AdamW + warm-up/cosine, label smoothing, grad clipping, AMP on CUDA, DDP via torchrun,
atomic per-epoch checkpoints with exact resume, metrics as CSV and JSON.

Exact resume: everything random is either a pure function of (seed, epoch, index) -- the data order, the
moving-digits clips, the video clip starts -- or drawn from torch's global RNG, whose state (with Python's) is
stored in the checkpoint's ``extra`` together with the optimizer, scheduler and AMP-scaler states and the epoch.
``extra`` holds only tensors and plain containers, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from svformer_deploy._atomic import atomic_write_csv, atomic_write_json
from svformer_deploy._outputs import mark_output, refuse_file_in_the_way, refuse_whole_output
from svformer_deploy._threads import ThreadGovernor
from svformer_deploy.errors import ConfigError, DataError, DistributedError, OutputExistsError, TrainingDivergedError
from svformer_deploy.models import create_model, read_checkpoint, save_checkpoint
from svformer_deploy.models.checkpoint import load_state_dict_checked
from svformer_deploy.training.outputs import BEST, LAST, METRICS_CSV, METRICS_JSON, RUNS, TRAIN_RUN

__all__ = ["LoopConfig", "TrainConfig", "TrainResult", "LossFn", "train", "param_groups", "warmup_cosine",
           "collate_skip_bad", "soft_cross_entropy", "topk_correct", "precise_bn", "classification_loss",
           "freeze_bn_statistics", "DivergenceGuard", "nonfinite_tensors", "MAX_BAD_STEPS"]


@dataclass(frozen=True)
class LoopConfig:
    """The knobs of the training loop itself (data, schedule, optimiser, processes), shared by every run that
    trains through :func:`_train_epoch`: :class:`TrainConfig` and fine-tuning's ``FinetuneConfig`` are made of
    these fields plus their own. Defaults: the moving-digits training recipe."""

    data: str = "moving-digits"
    out_dir: str = "runs/train"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    clip_grad: float | None = 1.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    train_clips: int | None = None      # moving digits: clips per epoch (default 6000)
    val_videos: int | None = None       # validate on the first N videos (default: all)
    dist_timeout: float = 1800.0        # DDP: seconds a collective may wait (rank 0's validation included)
    max_bad_steps: int = 20             # consecutive steps with a non-finite loss or gradient that stop the run

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming the flag, before any work (a subclass calls this first)."""
        for name in ("epochs", "batch_size", "train_clips", "val_videos", "max_bad_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be >= 1")
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers}: must be >= 0")
        if not _is_device_name(self.device):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")


def _is_device_name(name: str) -> bool:
    """True for ``auto`` and for what torch parses as a CPU or CUDA device (``cpu``, ``cuda``, ``cuda:1``)."""
    if name == "auto":
        return True
    try:
        return torch.device(name).type in ("cpu", "cuda")
    except (RuntimeError, TypeError):
        return False


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Every knob of a training run (stored in the checkpoints' meta): the loop's (:class:`LoopConfig`), the
    model and the classification loss's augmentation. Defaults: the moving-digits recipe."""

    model: str = "svformer_tiny"
    label_smoothing: float = 0.1
    amp: bool = True
    mixup: float = 0.0                  # Mixup alpha (reference 0.8); 0 = off
    cutmix: float = 0.0                 # CutMix alpha (reference 1.0); 0 = off
    rand_augment: tuple[int, int] | None = None  # (num_ops, magnitude), reference (2, 5)
    erase_prob: float = 0.0             # random erasing probability, reference 0.25
    sampling_rate: int = 4              # video folders: source frames per clip frame
    split_no: int = 1                   # video folders: official split
    precise_bn_batches: int = 20        # recompute BN statistics on this many training batches per epoch; 0 = off
    model_overrides: dict[str, Any] = field(default_factory=dict)


MAX_BAD_STEPS = LoopConfig.max_bad_steps
"""The default number of consecutive bad steps (non-finite loss or gradient) after which training stops."""

LossFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, dict[str, Tensor]]]
"""One training step's loss: ``fn(clips, labels) -> (loss, logits, terms)`` on the device's batch; ``terms``
are extra per-batch figures averaged over the epoch's clips into the row as ``train_<name>``."""


@dataclass
class TrainResult:
    out_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on >= 2-D weights only; none on 1-D parameters (biases, BN affine, PLIF w)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: (step + 1) / warmup for step < warmup, then
    min_ratio + (1 - min_ratio) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def collate_skip_bad(batch: list[tuple]) -> tuple[Tensor | None, Tensor | None, list[str]]:
    """Collate (clip, label) items, dropping the (None, label, video_id) items of unreadable videos.

    Returns (clips (B, C, T, H, W) or None if every item was bad, labels, ids of the skipped videos).
    """
    good = [b for b in batch if b[0] is not None]
    bad = [str(b[2]) for b in batch if b[0] is None]
    if not good:
        return None, None, bad
    return torch.stack([b[0] for b in good]), torch.tensor([int(b[1]) for b in good]), bad


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k (target rows sum to 1)."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def topk_correct(logits: Tensor, labels: Tensor, k: int) -> int:
    """Number of samples whose label is among the k highest scores (k capped at the number of classes)."""
    k = min(k, logits.shape[-1])
    return int((logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).sum())


@torch.no_grad()
def precise_bn(model: nn.Module, batches) -> int:  # noqa: ANN001 (iterable of clip tensors)
    """Set every BatchNorm's running statistics to the plain average of the batch statistics of ``batches``
    computed with the current weights (SlowFast's "precise BN"): momentum 1/(k+1) at batch k gives
    running = mean_k(stat_k). The exponential running averages lag behind fast-changing weights, and spiking
    layers magnify that lag (a small shift moves membrane potentials across the threshold). Returns the count.
    """
    from svformer_deploy.models.norm import TemporalBatchNorm

    bns = [m for m in model.modules() if isinstance(m, (TemporalBatchNorm, nn.modules.batchnorm._BatchNorm))]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    model.train()
    n = 0
    try:
        for clips in batches:
            for m in bns:
                m.momentum = 1.0 / (n + 1)
            model(clips)
            n += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return n


# ----------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str, timeout_s: float) -> _Dist:
    """Join the torchrun process group (gloo on CPU, NCCL on CUDA) with a collective timeout of ``timeout_s``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import datetime

    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_ranks(flag: bool, dist_info: _Dist, device: torch.device) -> bool:
    """True when ``flag`` is true on every process: the one way a per-batch decision that changes the sequence of
    collectives (step or not) is taken, so that every rank takes the same one."""
    if dist_info.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _is_collective_error(err: BaseException) -> bool:
    """A failure of torch.distributed itself (timeout, a peer that closed the connection), not of the model."""
    import torch.distributed as dist

    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(k in text for k in ("timed out", "timeout", "connection closed",
                                                                      "connection reset", "gloo", "nccl"))


def _collective_failure(err: BaseException, timeout_s: float) -> DistributedError:
    return DistributedError(
        f"a collective between the training processes failed or waited longer than --dist-timeout {timeout_s:g} s "
        f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); another process stopped or took a "
        "different path: check every process's log above; raise --dist-timeout if validation on rank 0 is slow")


def _resolve_device(name: str, dist_info: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{dist_info.local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


# ---------------------------------------------------------------------------------------------------- state


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("optimizer", "scheduler", "scaler", "rng", "epoch", "best_top1"),
    "finetune": ("optimizer", "scheduler", "rng", "epoch"),
}
"""The entries of a ``last.pt``'s ``extra`` that ``--resume`` of each command restores (what its ``last.pt`` holds);
``rng`` itself holds ``torch`` and ``python`` (:func:`_rng_state`)."""


def _run_kind(meta: dict[str, Any]) -> str | None:
    """The command that wrote a checkpoint (its ``meta``): ``finetune``, ``train``, or None (neither)."""
    return "finetune" if "finetune_config" in meta else "train" if "train_config" in meta else None


def _continue_hint(path: Path, meta: dict[str, Any], kind: str) -> str:
    """The command that continues the run of ``kind`` whose ``last.pt`` is ``path``."""
    if kind == "train":
        return f"svformer-deploy train --resume {path} (with the options it was started with)"
    saved = meta.get("finetune_config") or {}
    folder = path.parent.parent if saved.get("spike_budget") is not None else path.parent  # budget-R of a curve
    teacher = (meta.get("teacher") or {}).get("checkpoint", "CHECKPOINT")
    return f"svformer-deploy finetune {teacher} --out {folder} --resume (with the options it was started with)"


def resume_state(payload: dict[str, Any], path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The resume state (``extra``) of the checkpoint ``payload`` read from ``path``, checked before any work for
    ``--resume`` of ``kind`` (``train`` or ``finetune``): it must be a ``last.pt`` of a run of that kind (its meta
    holds ``train_config`` / ``finetune_config``) holding every entry of :data:`RESUME_KEYS` ``[kind]``. Anything
    else raises :class:`ConfigError`, one line naming what the file is and the fix."""
    path = Path(path)
    meta = payload.get("meta") or {}
    writer = _run_kind(meta)
    if writer is not None and writer != kind:
        raise ConfigError(f"{path} is the last.pt of {RUNS[writer].what}, not of {RUNS[kind].what}; "
                          f"continue it with {_continue_hint(path, meta, writer)}")
    extra = payload.get("extra") or {}
    if not extra:
        raise ConfigError(f"{path} holds no training state (it is a 'best', fine-tuned or exported checkpoint); "
                          "resume from the run's last.pt")
    rng = extra.get("rng")
    missing = [k for k in RESUME_KEYS[kind] if k not in extra]
    missing += [f"rng.{k}" for k in ("torch", "python") if isinstance(rng, dict) and k not in rng]
    if missing:
        raise ConfigError(f"{path} lacks the resume state svformer-deploy {kind} needs ({', '.join(missing)}): it "
                          f"is not a last.pt that svformer-deploy {kind} wrote; resume from such a last.pt, or drop "
                          "--resume to start a new run")
    return extra


def _write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_csv(out_dir / METRICS_CSV, history)
    atomic_write_json(out_dir / METRICS_JSON, history)


# ------------------------------------------------------------------------------------------------ divergence


def nonfinite_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Names of the model's parameters and buffers, and of the optimizer's state tensors, that hold NaN or Inf."""
    names = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            names += [f"optimizer.state.{index}.{k}" for k, v in state.items()
                      if isinstance(v, Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    return names


@dataclass
class DivergenceGuard:
    """The bad-step rule of the training loop (``train`` and ``finetune``).

    A step is *bad* when its loss or its gradient (the total gradient norm) holds NaN or Inf; with AMP, when the
    GradScaler skips it (its rule: Inf/NaN in the unscaled gradients; it then halves the loss scale). A bad step
    changes nothing: no optimizer step, and the buffers its forward moved (BatchNorm running statistics) are put
    back; it is counted in its epoch's ``nonfinite_steps``. Under torchrun every process takes the decision
    together. ``limit`` consecutive bad steps, counted across epoch boundaries, stop the run with
    :class:`TrainingDivergedError` naming the epoch, ``kept`` (what the run folder still holds) and ``advice``.
    An epoch that ends inside a run of bad steps (:meth:`suspect`: its weights are those of the last good step,
    which since gave only non-finite steps) or with NaN/Inf in the model or the optimizer state writes no
    checkpoint, so ``last.pt`` keeps the last epoch that ended well and ``best.pt`` is never a non-finite model.
    """

    limit: int = MAX_BAD_STEPS
    advice: str = "lower --lr and start again with --force"
    run: int = 0                        # consecutive bad steps so far
    kept: str = "nothing was saved"

    def suspect(self) -> bool:
        """True while the latest step was bad."""
        return self.run > 0

    def failure(self, epoch: int, epoch_bad: int, where: str = "") -> TrainingDivergedError:
        what = where or (f"{self.run} consecutive steps with a non-finite loss or gradient (--max-bad-steps "
                         f"{self.limit}; {epoch_bad} in this epoch)")
        return TrainingDivergedError(f"epoch {epoch + 1}: training diverged: {what}; {self.advice}; {self.kept}")

    def check_savable(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Whether epoch ``epoch``'s state may be written: False while :meth:`suspect`; NaN/Inf in the model or the
        optimizer state raise (bad steps never change the weights, so the run could not recover)."""
        bad = nonfinite_tensors(model, optimizer)
        if bad:
            raise self.failure(epoch, 0, f"NaN or Inf in {len(bad)} tensor(s) after the epoch ({', '.join(bad[:3])})")
        return not self.suspect()


class _BufferUndo:
    """The module buffers (BatchNorm running statistics) as they were before a step, to put back after a bad one."""

    def __init__(self, model: nn.Module) -> None:
        self.buffers = [b for b in model.buffers() if b.is_floating_point() or b.dtype == torch.int64]
        self.saved = [b.detach().clone() for b in self.buffers]

    def save(self) -> None:
        for kept, b in zip(self.saved, self.buffers):
            kept.copy_(b)

    def restore(self) -> None:
        with torch.no_grad():
            for kept, b in zip(self.saved, self.buffers):
                b.copy_(kept)


# ---------------------------------------------------------------------------------------------------- loops


@torch.no_grad()
def _validate(model: nn.Module, loader, device: torch.device,  # noqa: ANN001
              governor: ThreadGovernor | None = None) -> dict[str, Any]:
    """Loss, top-1 and top-5 over the readable validation clips; unreadable videos are skipped, counted
    (``val_skipped_videos``) and named (``val_skipped_ids``) as in training."""
    model.eval()
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    skipped: list[str] = []
    for clips, labels, bad in loader:
        if governor is not None:
            governor.tick()
        skipped.extend(bad)
        if clips is None:
            continue
        clips, labels = clips.to(device), labels.to(device)
        logits = model(clips).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct1 += topk_correct(logits, labels, 1)
        correct5 += topk_correct(logits, labels, 5)
        n += len(labels)
    if n == 0:
        raise DataError(f"none of the validation videos could be read ({len(skipped)} skipped, e.g. {skipped[:3]}); "
                        "re-copy them or remove them from the test list")
    row: dict[str, Any] = {"val_loss": loss_sum / n, "val_top1": correct1 / n, "val_top5": correct5 / n,
                           "val_clips": n, "val_skipped_videos": len(skipped)}
    if skipped:
        row["val_skipped_ids"] = ";".join(skipped)
    return row


def _loader(dataset, cfg: LoopConfig, dist_info: _Dist, epoch: int, train: bool):  # noqa: ANN001, ANN202
    from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler, Subset

    if not train and cfg.val_videos is not None:
        dataset = Subset(dataset, range(min(cfg.val_videos, len(dataset))))
    if train and dist_info.world > 1:
        sampler = DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    elif train:
        # a fresh permutation per epoch, a pure function of (seed, epoch): resume needs no sampler state
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        sampler = order.tolist()
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                      collate_fn=collate_skip_bad, drop_last=train, persistent_workers=False)


VAL_CACHE_BYTES = 512 << 20
"""Validation clips up to this size (bytes of the collated clip tensors) are read once and kept for the next
epochs (``svformer_tiny`` on moving digits: 1000 clips of 3 x 8 x 32 x 32 float32, 98 MB)."""


class _ValBatches:
    """The batches of ``make_loader()``, read (decoded or generated) at the first pass and replayed from memory
    at the next ones when their clips fit in ``budget`` bytes; otherwise read again at every pass. Right for a
    validation set, whose clips are the same at every epoch."""

    def __init__(self, make_loader: Callable[[], Any], budget: int = VAL_CACHE_BYTES) -> None:
        self.make_loader, self.budget = make_loader, budget
        self.cache: list[tuple] | None = None
        self.fits = True

    def __iter__(self):  # noqa: ANN204
        if self.cache is not None:
            yield from self.cache
            return
        kept: list[tuple] = []
        size = 0
        for batch in self.make_loader():
            if self.fits:
                size += 0 if batch[0] is None else batch[0].nbytes
                if size <= self.budget:
                    kept.append(batch)
                else:
                    self.fits, kept = False, []
            yield batch
        if self.fits:
            self.cache = kept


def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, force: bool = False,
          command: str | None = None, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; write last.pt, best.pt, metrics.csv and metrics.json to ``cfg.out_dir``.

    Under ``torchrun`` (WORLD_SIZE > 1) every process trains on its shard (DistributedSampler) through
    DistributedDataParallel; rank 0 validates and writes. Returns the paths and the per-epoch history.
    """
    from svformer_deploy.data import build_dataset, class_names

    dist_info = _init_distributed("cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device,
                                  cfg.dist_timeout)
    device = _resolve_device(cfg.device, dist_info)
    out_dir = Path(cfg.out_dir)
    last_path, best_path = out_dir / LAST, out_dir / BEST
    refuse_file_in_the_way(out_dir)
    refuse_whole_output(out_dir, TRAIN_RUN)
    if resume is None and last_path.exists() and not force:  # refuse_whole_output: it is an earlier training run
        raise OutputExistsError(f"{last_path} exists: continue it with --resume {last_path}, choose another "
                                "--out, or pass --force to start over")
    payload = None if resume is None else read_checkpoint(resume)
    extra = {} if payload is None else resume_state(payload, resume, "train")
    if resume is not None and last_path.exists() and not force and not os.path.samefile(last_path, resume):
        raise OutputExistsError(f"{last_path} is another run's last.pt, which resuming {resume} there would "
                                f"replace: continue that run with --resume {last_path}, choose another --out, or "
                                "pass --force to replace it")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    names = class_names(cfg.data)
    overrides = dict(cfg.model_overrides)
    model = create_model(cfg.model, num_classes=len(names), **overrides)
    mcfg = model.config
    aug = {} if cfg.data == "moving-digits" else {
        "rand_augment": cfg.rand_augment, "erase_prob": cfg.erase_prob, "sampling_rate": cfg.sampling_rate,
        "split_no": cfg.split_no}
    train_ds = build_dataset(cfg.data, mcfg, split="train", seed=cfg.seed, num_clips=cfg.train_clips, **aug)
    val_ds = build_dataset(cfg.data, mcfg, split="val", seed=0,  # the same validation set for every run
                           **({k: aug[k] for k in ("sampling_rate", "split_no")} if aug else {}))
    steps_per_epoch = len(train_ds) // (cfg.batch_size * dist_info.world)
    if steps_per_epoch < 1:
        raise ConfigError(f"{len(train_ds)} training clips make no full batch of {cfg.batch_size} x {dist_info.world} "
                          "process(es); lower --batch-size or add data")
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))

    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    min_ratio = cfg.min_lr / cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_ratio))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_top1, history = 0, -1.0, []
    if payload is not None:
        if payload["config"] != mcfg.to_dict():
            raise ConfigError(f"{resume} was trained with another model config; resume with the same --model and "
                              "options")
        load_state_dict_checked(model, payload["state_dict"], str(resume))
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        scaler.load_state_dict(extra["scaler"])
        _set_rng_state(extra["rng"])
        start_epoch, best_top1 = int(extra["epoch"]) + 1, float(extra["best_top1"])
        history = list(payload["meta"].get("history", []))

    ddp_model: nn.Module = model
    if dist_info.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    governor = ThreadGovernor()  # fewer threads while other processes keep our CPUs busy
    val_batches = _ValBatches(lambda: _loader(val_ds, cfg, dist_info, 0, train=False))
    meta_base = {"class_names": names, "data": cfg.data, "seed": cfg.seed, "command": command,
                 "train_config": _jsonable(asdict(cfg)), "world_size": dist_info.world}

    guard = DivergenceGuard(cfg.max_bad_steps, advice=f"lower --lr (now {cfg.lr:g}), keep --clip-grad on or lengthen "
                            "--warmup-epochs, and start again with --force")
    if payload is not None:
        guard.kept = f"{last_path} still holds epoch {start_epoch}, the last that ended well"

    def finish_epoch(epoch: int, row: dict[str, Any]) -> None:
        """Rank 0: precise BN, last.pt (before validation), validation, last.pt / best.pt and metrics; no
        checkpoint for an epoch that ended inside a run of non-finite steps (:class:`DivergenceGuard`)."""
        nonlocal best_top1
        savable = guard.check_savable(epoch, model, optimizer)
        if savable and cfg.precise_bn_batches > 0:
            bn_loader = _loader(train_ds, cfg, _Dist(), epoch, train=True)
            precise_bn(model, _first_batches(bn_loader, cfg.precise_bn_batches, device))
            guard.check_savable(epoch, model, optimizer)  # statistics of a model whose activations overflow

        def save_last(rows: list[dict[str, Any]], best: float) -> None:
            extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": _rng_state(), "epoch": epoch, "best_top1": best}
            save_checkpoint(last_path, model, extra=extra, **dict(meta_base, epoch=epoch + 1, metrics=rows[-1],
                                                                  history=rows))

        mark_output(out_dir, TRAIN_RUN)
        row["checkpoint_saved"] = savable
        if savable:
            save_last([*history, row], best_top1)  # the epoch's training is kept whatever validation does
        row.update(_validate(model, val_batches, device, governor))
        history.append(row)
        if savable:
            improved = row["val_top1"] > best_top1
            best_top1 = max(best_top1, row["val_top1"])
            save_last(history, best_top1)
            if improved:
                save_checkpoint(best_path, model, **dict(meta_base, epoch=epoch + 1, metrics=row, history=history))
            guard.kept = (f"{last_path} holds epoch {epoch + 1}, the last that ended well, and {best_path} the best "
                          "epoch up to it")
        _write_metrics(out_dir, history)
        if on_epoch is not None:
            on_epoch(row)

    loss_fn = classification_loss(ddp_model, cfg, len(names), use_amp)
    _run_epochs(range(start_epoch, cfg.epochs), dist_info, device, cfg.dist_timeout, governor,
                lambda epoch: _train_epoch(ddp_model, model, train_ds, cfg, dist_info, device, epoch, optimizer,
                                           scheduler, scaler, steps_per_epoch, progress, governor, loss_fn,
                                           guard=guard),
                finish_epoch)
    if guard.suspect():  # the same on every process
        raise guard.failure(cfg.epochs - 1, 0, f"the run ended inside {guard.run} consecutive steps with a non-finite "
                                               "loss or gradient, so its last epoch was not saved")
    return TrainResult(out_dir, last_path, best_path, history)


def classification_loss(ddp_model: nn.Module, cfg: TrainConfig, num_classes: int, use_amp: bool) -> LossFn:
    """``train``'s step loss: Mixup / CutMix and label smoothing of the batch (``cfg``; a no-op when off), the
    forward (float16 autocast with ``use_amp``), then :func:`soft_cross_entropy` against the mixed targets."""
    from svformer_deploy.data.video_folder import mix_batch

    def loss_fn(clips: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        mix_rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        clips, target = mix_batch(clips, labels, num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                                  smoothing=cfg.label_smoothing, rng=mix_rng)
        with torch.autocast(clips.device.type, dtype=torch.float16, enabled=use_amp):
            logits = ddp_model(clips)
        return soft_cross_entropy(logits, target), logits, {}

    return loss_fn


def _run_epochs(epochs: range, dist_info: _Dist, device: torch.device, dist_timeout: float,
                governor: ThreadGovernor, train_epoch: Callable[[int], dict[str, Any]],
                finish_epoch: Callable[[int, dict[str, Any]], None]) -> None:
    """``row = train_epoch(epoch)`` on every process, then ``finish_epoch(epoch, row)`` (validation, checkpoints,
    metrics) on rank 0, for every epoch. Every process learns whether rank 0's part worked (which also stands for
    a barrier), so a failure there stops all of them instead of leaving them waiting; a collective that fails or
    waits past ``dist_timeout`` becomes one :class:`DistributedError`. Leaves the process group and restores
    the thread count at the end, also on failure."""
    try:
        for epoch in epochs:
            row = train_epoch(epoch)
            failure: BaseException | None = None
            if dist_info.main:
                try:
                    finish_epoch(epoch, row)
                except BaseException as err:  # tell the other processes before failing, instead of leaving them waiting
                    failure = err
            if not _all_ranks(failure is None, dist_info, device) and failure is None:
                raise DistributedError(f"rank 0 failed after epoch {epoch + 1} (validation or saving; its error is "
                                       "in its log); this process stops too")
            if failure is not None:
                raise failure
    except RuntimeError as err:
        if dist_info.world > 1 and _is_collective_error(err):
            raise _collective_failure(err, dist_timeout) from err
        raise
    finally:
        if dist_info.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        governor.restore()


def freeze_bn_statistics(model: nn.Module) -> None:
    """Eval mode for every BatchNorm: statistics frozen, affine parameters still trained."""
    from svformer_deploy.models.norm import TemporalBatchNorm

    for m in model.modules():
        if isinstance(m, (TemporalBatchNorm, nn.modules.batchnorm._BatchNorm)):
            m.eval()


def _train_epoch(ddp_model: nn.Module, model: nn.Module, train_ds, cfg: LoopConfig, dist_info: _Dist,  # noqa: ANN001
                 device: torch.device, epoch: int, optimizer, scheduler, scaler,  # noqa: ANN001
                 steps_per_epoch: int, progress: bool, governor: ThreadGovernor, loss_fn: LossFn,
                 frozen_bn: bool = False, guard: DivergenceGuard | None = None) -> dict[str, Any]:
    """One epoch of training with the step loss ``loss_fn`` (:data:`LossFn`); returns its metrics row (summed
    over processes): ``train_loss`` and ``train_top1`` (of the logits against the labels), each of the loss's
    ``terms`` as ``train_<name>`` (clip-weighted means), clips trained, skipped and dropped. ``frozen_bn`` keeps
    every BatchNorm in eval mode (statistics frozen, affine parameters trained).

    Unreadable videos are dropped from their batch, counted and named. Readable clips of a batch that cannot
    step (fewer than 2 clips: BatchNorm needs 2, on this or on any other process) are carried into the next batch
    instead of being lost (at most ``batch_size`` of them; the rest, and what is left when the epoch ends, are
    counted as ``dropped_clips``). Every process takes the step / no-step decision together
    (:func:`_all_ranks`), so the sequence of gradient all-reduces is the same on all of them.

    A step whose loss or gradient is not finite is skipped and counted (``nonfinite_steps``; its clips are not in
    ``train_clips``), and ``guard.limit`` consecutive ones stop the run: :class:`DivergenceGuard` (one is made from
    ``cfg.max_bad_steps`` when none is given; pass the run's own to count across epochs).
    """
    guard = guard or DivergenceGuard(cfg.max_bad_steps)
    undo = _BufferUndo(model)
    epoch_bad = 0
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    loader = _loader(train_ds, cfg, dist_info, epoch, train=True)
    ddp_model.train()
    if frozen_bn:
        freeze_bn_statistics(ddp_model)
    t0 = time.perf_counter()
    seen = correct = dropped = 0
    loss_sum = 0.0
    term_sums: dict[str, float] = {}
    skipped: list[str] = []
    carry: tuple[Tensor, Tensor] | None = None
    bar = _progress(progress and dist_info.main, f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch)
    with bar:
        task = bar.add_task("train", total=steps_per_epoch)
        for clips, labels, bad in loader:
            governor.tick()
            skipped.extend(bad)
            if carry is not None:
                clips = carry[0] if clips is None else torch.cat([carry[0], clips])
                labels = carry[1] if labels is None else torch.cat([carry[1], labels])
                carry = None
            if not _all_ranks(clips is not None and len(clips) >= 2, dist_info, device):
                if clips is not None:
                    carry = (clips[-cfg.batch_size:], labels[-cfg.batch_size:])
                    dropped += max(0, len(clips) - cfg.batch_size)
                bar.advance(task)
                continue
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            undo.save()
            loss, logits, terms = loss_fn(clips, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad or not scaler.is_enabled():
                scaler.unscale_(optimizer)  # a no-op without AMP
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad or math.inf)
            if scaler.is_enabled():  # AMP: the scaler's rule (it skips the step and lowers the scale on Inf/NaN)
                scale = scaler.get_scale()
                scaler.step(optimizer)
                scaler.update()
                good = scaler.get_scale() >= scale
            else:
                good = _all_ranks(bool(torch.isfinite(loss.detach()) & torch.isfinite(norm)), dist_info, device)
                if good:
                    optimizer.step()
            with warnings.catch_warnings():
                # the schedule counts batches, skipped ones too (torch warns when the very first one is skipped)
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                scheduler.step()
            for k in terms:  # the row names every term, even in an epoch whose every step was bad
                term_sums.setdefault(k, 0.0)
            if not good:
                undo.restore()
                guard.run += 1
                epoch_bad += 1
                if guard.run >= guard.limit:
                    raise guard.failure(epoch, epoch_bad)
                bar.advance(task)
                continue
            guard.run = 0
            loss_sum += float(loss.detach()) * len(labels)
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v.detach()) * len(labels)
            correct += topk_correct(logits.detach(), labels, 1)
            seen += len(labels)
            bar.update(task, advance=1, description=f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
    dropped += 0 if carry is None else len(carry[0])
    counts = torch.tensor([seen, correct, loss_sum, len(skipped), dropped, *term_sums.values()], dtype=torch.float64,
                          device=device)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
        gathered: list[list[str]] = [[] for _ in range(dist_info.world)]
        dist.all_gather_object(gathered, skipped)
        skipped = [s for part in gathered for s in part]
    train_time = time.perf_counter() - t0
    seen_all, dropped_all = int(counts[0]), int(counts[4])
    if seen_all == 0 and epoch_bad == 0:
        if dropped_all:
            raise DataError(
                f"epoch {epoch + 1}: {dropped_all} readable clip(s) were never trained on: no step had at least 2 "
                f"readable clips on every process ({len(skipped)} unreadable video(s), e.g. {skipped[:3]}); re-copy "
                "or remove the unreadable videos, or raise --batch-size / use fewer processes")
        raise DataError(f"epoch {epoch + 1}: none of the training videos could be read "
                        f"({len(skipped)} skipped, e.g. {skipped[:3]}); re-copy them or check the split files")
    per_clip = seen_all or math.nan  # every step of the epoch bad: no loss to average
    row: dict[str, Any] = {
        "epoch": epoch + 1, "train_loss": float(counts[2]) / per_clip, "train_top1": float(counts[1]) / per_clip,
        **{f"train_{k}": float(v) / per_clip for k, v in zip(term_sums, counts[5:].tolist())},
        "lr": optimizer.param_groups[0]["lr"], "train_clips": seen_all, "skipped_videos": int(counts[3]),
        "dropped_clips": dropped_all, "nonfinite_steps": epoch_bad, "train_seconds": round(train_time, 3),
        "clips_per_second": round(seen_all / train_time, 2)}
    if skipped:
        row["skipped_ids"] = ";".join(sorted(set(skipped)))
    return row


def _first_batches(loader, n: int, device: torch.device):  # noqa: ANN001, ANN202
    for k, (clips, _, _) in enumerate(loader):
        if k >= n:
            break
        if clips is not None and len(clips) >= 2:
            yield clips.to(device)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=list))


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def advance(self, *a: Any, **k: Any) -> None:
        return None

    def update(self, *a: Any, **k: Any) -> None:
        return None


def _progress(enabled: bool, title: str, total: int):  # noqa: ANN202
    if not enabled:
        return _NoBar()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from rich.console import Console

    # on stderr, so that stdout carries only the results; off a terminal none (a log gets the epoch lines, and a
    # bar cut short by an error would stand before the one error line)
    err = Console(stderr=True)
    return Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False, console=err,
                    disable=not err.is_terminal)
