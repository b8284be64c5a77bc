"""Fine-tuning by knowledge distillation: per-timestep BN -> shared BN conversion, and spike-budget training.

**BN conversion.** A per-timestep BatchNorm is, in eval mode, the affine map ``y = s_t * x + h_t`` with its own
scale and shift per timestep t (:meth:`TemporalBatchNorm.affine`). No time-invariant graph can carry it. The
student starts from its time average, ``y = mean_t(s_t) * x + mean_t(h_t)`` -- exactly the map that
``export --approximate-bn`` folds (the *naive fold*) -- and is then trained to match the original (the
*teacher*). The student's BatchNorms keep frozen statistics during fine-tuning (they run in eval mode), so the
map trained is the map exported; their affine parameters and every other weight are trained.

**Loss** of a batch with student logits z_s, teacher logits z_t, labels y, temperature tau:

    L = alpha * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) + (1 - alpha) * CE(z_s, y)
        + rate_weight * mean_l mean_t (r_s[l, t] - r_t[l, t])^2          (per-layer firing-rate distillation)
        + budget_weight * max(0, r_s - R) / R                             (spike budget R, when set)

where r[l, t] is the fraction of neurons of layer l firing at timestep t and r_s the fraction of all
neuron-steps of the network that spike (sum of spikes over every neuron layer / number of neuron-steps).
Spikes are differentiable through the neurons' surrogate gradient, so the rates are trained directly.

**Report.** Top-1 (softmax summed over the views of each video) of the original, the naive fold and the
fine-tuned model on the same videos and views, with each one's firing rate and, on request, its energy per
video from the energy counter (:func:`svformer_deploy.energy.count_ops` priced by ``energy_of``) on those views.

Training runs through the engine's one epoch loop (:func:`svformer_deploy.training.engine._train_epoch`) with the
loss above as its step loss, so it shares ``train``'s distributed setup, data order, joint step / no-step decision,
carry-over of readable clips from a batch too small to step, skipped-video counts, thread governor and rank-0
failure handling: under ``torchrun`` every process trains on its shard through DistributedDataParallel and rank 0
evaluates and writes. ``last.pt`` holds the full resume state.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from svformer_deploy._atomic import atomic_write, atomic_write_json
from svformer_deploy._outputs import mark_output, refuse_file_in_the_way, refuse_whole_output
from svformer_deploy._threads import ThreadGovernor
from svformer_deploy.errors import ConfigError, OutputExistsError
from svformer_deploy.models import (create_model, forward_hooks, iter_neurons, load_checkpoint, read_checkpoint,
                                    save_checkpoint)
from svformer_deploy.models.checkpoint import load_state_dict_checked
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.training.outputs import CURVE_CSV, CURVE_PNG, FINETUNE_RUN, FINETUNED, LAST
from svformer_deploy.training.outputs import FINETUNE_REPORT as REPORT_NAME
from svformer_deploy.training.engine import (
    DivergenceGuard, LoopConfig, LossFn, _init_distributed, _jsonable, _loader, _resolve_device, _rng_state,
    _run_epochs,
    _set_rng_state, _train_epoch, _validate, _ValBatches, _write_metrics, param_groups, resume_state, warmup_cosine,
)

__all__ = ["FinetuneConfig", "FinetuneResult", "time_averaged_bn", "spike_rates", "SpikeRates", "distillation_loss",
           "rate_matching_loss", "budget_penalty", "distillation_step", "finetune", "assess", "energy_per_video",
           "finetune_budgets", "format_report", "conversion_report", "plot_budget_curve", "REPORT_NAME", "CURVE_CSV",
           "CURVE_PNG"]



@dataclass(frozen=True)
class FinetuneConfig(LoopConfig):
    """Every knob of a fine-tuning run (stored in the checkpoints' meta): the training loop's
    (:class:`~svformer_deploy.training.engine.LoopConfig`, shared with ``train``) and the distillation's.
    Defaults: the recipe that recovered the naive fold's cost on the shipped per-timestep-BN moving-digits model
    (docs/training.md); the loop fields below only change their defaults."""

    out_dir: str = "runs/finetune"
    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    train_clips: int | None = 3000      # moving digits: clips per epoch
    val_videos: int | None = 200        # per-epoch validation on the first N videos
    bn: str = "shared"                  # "shared": convert per-timestep BN (time-averaged init); "keep": as is
    kd_temperature: float = 2.0
    kd_alpha: float = 0.5               # weight of the distillation term; 1 - alpha on the label cross-entropy
    rate_weight: float = 0.0            # per-layer firing-rate distillation; 0 = off
    spike_budget: float | None = None   # target fraction of neuron-steps that spike; None = no budget
    budget_weight: float = 1.0
    eval_videos: int | None = None      # report: first N validation videos (default: all)
    eval_clips: int = 1
    eval_crops: int = 1
    energy: bool = False                # report: also the energy per video (energy counter) of every model
    energy_profile: str = "45nm-fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bn not in ("shared", "keep"):
            raise ConfigError(f"--bn {self.bn!r}: use 'shared' (convert to exportable shared BN) or 'keep'")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"kd_alpha={self.kd_alpha} must lie in [0, 1]")
        if self.kd_temperature <= 0:
            raise ConfigError(f"kd_temperature={self.kd_temperature} must be positive")
        if self.spike_budget is not None and not 0.0 < self.spike_budget < 1.0:
            raise ConfigError(f"--spike-budget {self.spike_budget}: give the fraction of neuron-steps allowed to "
                              "spike, between 0 and 1 (e.g. 0.05)")
        if self.budget_weight < 0:
            raise ConfigError(f"--budget-weight {self.budget_weight}: must be >= 0 (a negative weight rewards spikes)")
        if self.eval_videos is not None and self.eval_videos < 1:
            raise ConfigError(f"--videos {self.eval_videos}: must be >= 1")
        from svformer_deploy.energy.profiles import get_profile

        get_profile(self.energy_profile)  # an unknown profile fails here, not after the training


@dataclass
class FinetuneResult:
    out_dir: Path
    checkpoint: Path
    report: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ BN conversion


@torch.no_grad()
def time_averaged_bn(model: nn.Module) -> nn.Module:
    """A shared-BN copy of ``model`` whose every per-timestep BatchNorm is replaced by its time average.

    For scale s_t and shift h_t of :meth:`TemporalBatchNorm.affine` (t = 0..T-1), the shared BN gets
    ``running_mean = 0``, ``running_var = 1``, ``weight = mean_t(s_t) * sqrt(1 + eps)``, ``bias = mean_t(h_t)``,
    so its eval-mode map is ``y = mean_t(s_t) * x + mean_t(h_t)`` (averages in float64, rounded once), the
    map ``--approximate-bn`` folds. Every other tensor is copied unchanged. A shared-BN model is copied as is.
    """
    cfg = model.config
    if cfg.bn == "shared":
        return copy.deepcopy(model)
    student = create_model(cfg.replace(bn="shared"))
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in model.state_dict().items() if own[k].shape == v.shape}, strict=False)
    teacher_bns = dict(model.named_modules())
    for name, bn in student.named_modules():
        if isinstance(bn, TemporalBatchNorm):
            scale, shift = (a.double().mean(0) for a in teacher_bns[name].affine())
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.copy_((scale * math.sqrt(1.0 + bn.eps)).float())
            bn.bias.copy_(shift.float())
            bn.num_batches_tracked.copy_(teacher_bns[name].num_batches_tracked)
    return student.eval()


# ------------------------------------------------------------------------------------------- firing rates


@dataclass
class SpikeRates:
    """Per neuron layer, the fraction firing at each timestep ((T,) tensors, differentiable while recording
    with gradients), and the network's spikes and neuron-steps (sums over every layer)."""

    per_layer: dict[str, Tensor] = field(default_factory=dict)
    spikes: Tensor | float = 0.0
    neuron_steps: int = 0

    @property
    def overall(self) -> Tensor:
        """Fraction of all neuron-steps that spike: sum_l spikes_l / sum_l neuron_steps_l."""
        return torch.as_tensor(self.spikes) / max(1, self.neuron_steps)


@contextmanager
def spike_rates(model: nn.Module) -> Iterator[SpikeRates]:
    """Record firing rates of every neuron layer of ``model`` during the forwards in the block (last call of a
    layer wins). Unlike :func:`record_spikes` the values keep their autograd graph, so they can enter a loss."""
    rates = SpikeRates()
    totals: dict[str, tuple[Tensor, int]] = {}

    def make_hook(name: str):
        def hook(_m: nn.Module, _inputs: tuple, out: Tensor) -> None:
            out = out.float()
            rates.per_layer[name] = out.flatten(1).mean(1)
            totals[name] = (out.sum(), out.numel())
            rates.spikes = sum(s for s, _ in totals.values())
            rates.neuron_steps = sum(n for _, n in totals.values())

        return hook

    with forward_hooks((m, make_hook(name)) for name, m in iter_neurons(model)):
        yield rates


# ------------------------------------------------------------------------------------------------ losses


def distillation_loss(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float, alpha: float) -> Tensor:
    """``alpha * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) + (1 - alpha) * CE(z_s, y)``, batch mean
    (the tau^2 keeps the gradient scale of the soft term independent of tau, as in Hinton et al. 2015)."""
    tau = temperature
    soft = F.kl_div(F.log_softmax(student.float() / tau, -1), F.log_softmax(teacher.float() / tau, -1),
                    reduction="batchmean", log_target=True) * tau * tau
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student.float(), labels)


def rate_matching_loss(student: dict[str, Tensor], teacher: dict[str, Tensor]) -> Tensor:
    """``mean_l mean_t (r_s[l, t] - r_t[l, t])^2`` over the layers both recorded."""
    names = [k for k in student if k in teacher]
    if not names:
        raise ConfigError("no neuron layer recorded in both student and teacher; they are not the same network")
    return torch.stack([(student[k] - teacher[k].detach()).pow(2).mean() for k in names]).mean()


def budget_penalty(rate: Tensor, budget: float) -> Tensor:
    """Hinge on the network firing rate: ``max(0, r - R) / R`` (0 within budget, 1 at twice the budget)."""
    return torch.relu(rate - budget) / budget


# ----------------------------------------------------------------------------------------------- training


def distillation_step(model: nn.Module, student: nn.Module, teacher: nn.Module, cfg: FinetuneConfig) -> LossFn:
    """Fine-tuning's step loss for the engine's epoch loop (:data:`~svformer_deploy.training.engine.LossFn`): the
    teacher's forward without gradients and the student's (``model``: the student or its DDP wrapper), each
    recording its firing rates, then ``L`` of the module docstring. Terms: ``kd``, ``rate_match`` and ``budget``
    (0 when off) and ``firing_rate`` (the student's r_s, reported)."""

    def loss_fn(clips: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        with torch.no_grad(), spike_rates(teacher) as t_rates:
            t_logits = teacher(clips)
        with spike_rates(student) as s_rates:
            logits = model(clips)
        kd = distillation_loss(logits, t_logits, labels, cfg.kd_temperature, cfg.kd_alpha)
        terms = {"kd": kd, "rate_match": torch.zeros(()), "budget": torch.zeros(())}
        loss = kd
        if cfg.rate_weight > 0:
            terms["rate_match"] = rate_matching_loss(s_rates.per_layer, t_rates.per_layer)
            loss = loss + cfg.rate_weight * terms["rate_match"]
        if cfg.spike_budget is not None:
            terms["budget"] = budget_penalty(s_rates.overall, cfg.spike_budget)
            loss = loss + cfg.budget_weight * terms["budget"]
        return loss, logits, {**terms, "firing_rate": s_rates.overall}

    return loss_fn


def _checkpoint_meta(teacher_meta: dict[str, Any], cfg: FinetuneConfig, checkpoint: str | os.PathLike,
                     command: str | None, world: int) -> dict[str, Any]:
    return {"class_names": teacher_meta.get("class_names"), "data": cfg.data, "seed": cfg.seed, "command": command,
            "finetune_config": _jsonable(asdict(cfg)), "world_size": world,
            "teacher": {"checkpoint": str(checkpoint), "sha256": teacher_meta["sha256"],
                        "bn": teacher_meta["config"]["bn"]}}


def _nothing_to_resume(out_dir: Path, missing: str) -> ConfigError:
    """The one-line error of ``--resume`` into an ``out_dir`` that holds no run (``missing``: what it lacks)."""
    return ConfigError(f"nothing to resume in --out {out_dir}: no {missing}; drop --resume to start a new run")


def _resume_payload(out_dir: Path) -> dict[str, Any]:
    """The ``last.pt`` of the fine-tuning run in ``out_dir`` that ``--resume`` continues, read and its resume state
    checked (:func:`resume_state`) before any work; no ``last.pt`` raises :class:`ConfigError`."""
    last_path = out_dir / LAST
    if not last_path.is_file():
        raise _nothing_to_resume(out_dir, LAST)
    payload = read_checkpoint(last_path)
    resume_state(payload, last_path, "finetune")
    return payload


def finetune(checkpoint: str | os.PathLike, cfg: FinetuneConfig, *, resume: bool = False, force: bool = False,
             command: str | None = None, progress: bool = True,
             on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FinetuneResult:
    """Distil ``checkpoint`` (the teacher) into a student (see the module docstring) and report on both.

    Writes to ``cfg.out_dir``: ``last.pt`` (resume state, every epoch), ``finetuned.pt`` (the result),
    ``metrics.csv``/``metrics.json`` (per epoch) and ``finetune.json`` (the comparison report).
    ``resume`` continues from ``last.pt`` of that folder (same teacher and options).
    """
    from svformer_deploy.data import build_dataset

    out_dir = Path(cfg.out_dir)
    last_path, final_path = out_dir / LAST, out_dir / FINETUNED
    refuse_file_in_the_way(out_dir)
    payload = _resume_payload(out_dir) if resume else None
    refuse_whole_output(out_dir, FINETUNE_RUN)
    if not resume and last_path.exists() and not force:  # refuse_whole_output: it is an earlier fine-tuning run
        raise OutputExistsError(f"{last_path} exists: continue it with --resume, choose another --out, or "
                                "pass --force to start over")
    dist_info = _init_distributed("cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device,
                                  cfg.dist_timeout)
    device = _resolve_device(cfg.device, dist_info)
    teacher, tmeta = load_checkpoint(checkpoint, map_location=device)
    converts = cfg.bn == "shared" and teacher.config.bn != "shared"
    if not converts and cfg.spike_budget is None and cfg.rate_weight == 0:
        why = "has shared BN already, so --bn shared converts nothing" if cfg.bn == "shared" else "keeps its BN"
        raise ConfigError(f"{checkpoint} {why}: without --spike-budget or --rate-weight this run would distil the "
                          "model into itself; give a per-timestep-BN checkpoint to convert, or set a spike budget")
    torch.manual_seed(cfg.seed)
    student = (time_averaged_bn(teacher) if cfg.bn == "shared" else copy.deepcopy(teacher)).to(device)
    train_ds = build_dataset(cfg.data, student.config, split="train", seed=cfg.seed, num_clips=cfg.train_clips)
    val_ds = build_dataset(cfg.data, student.config, split="val", seed=0)
    steps_per_epoch = len(train_ds) // (cfg.batch_size * dist_info.world)
    if steps_per_epoch < 1:
        raise ConfigError(f"{len(train_ds)} training clips make no full batch of {cfg.batch_size} x "
                          f"{dist_info.world} process(es); lower --batch-size or add --train-clips")
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch)) if cfg.warmup_epochs > 0 else 0
    optimizer = torch.optim.AdamW(param_groups(student, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, cfg.min_lr / cfg.lr))

    start_epoch, history = 0, []
    if payload is not None:
        extra = payload["extra"]  # checked by _resume_payload
        saved = payload["meta"].get("finetune_config", {})
        if saved != _jsonable(asdict(cfg)) or payload["meta"].get("teacher", {}).get("sha256") != tmeta["sha256"]:
            raise ConfigError(f"{last_path} was written by another fine-tuning run (other teacher or options); "
                              "resume with the same checkpoint and options, or start over with --force")
        load_state_dict_checked(student, payload["state_dict"], str(last_path))
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        _set_rng_state(extra["rng"])
        start_epoch = int(extra["epoch"]) + 1
        history = list(payload["meta"].get("history", []))

    model: nn.Module = student
    if dist_info.world > 1:
        model = nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    meta_base = _checkpoint_meta(tmeta, cfg, checkpoint, command, dist_info.world)
    governor = ThreadGovernor()  # fewer threads while other processes keep our CPUs busy
    loss_fn = distillation_step(model, student, teacher, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # full precision: the disabled scaler passes the loss through
    val_batches = _ValBatches(lambda: _loader(val_ds, cfg, dist_info, 0, train=False))

    guard = DivergenceGuard(cfg.max_bad_steps, advice=f"lower --lr (now {cfg.lr:g}) and start again with --force")
    if payload is not None:
        guard.kept = f"{last_path} still holds epoch {start_epoch}, the last that ended well"

    def finish_epoch(epoch: int, row: dict[str, Any]) -> None:
        """Rank 0: validation, last.pt (resume state) and metrics; no last.pt for an epoch that ended inside a run
        of non-finite steps (:class:`~svformer_deploy.training.engine.DivergenceGuard`)."""
        savable = guard.check_savable(epoch, student, optimizer)
        row["checkpoint_saved"] = savable
        row.update(_validate(student, val_batches, device, governor))
        history.append(row)
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                 "epoch": epoch}
        mark_output(out_dir, FINETUNE_RUN)
        if savable:
            save_checkpoint(last_path, student, extra=extra, **meta_base, epoch=epoch + 1, metrics=row,
                            history=history)
            guard.kept = f"{last_path} holds epoch {epoch + 1}, the last that ended well"
        _write_metrics(out_dir, history)
        if on_epoch is not None:
            on_epoch(row)

    _run_epochs(range(start_epoch, cfg.epochs), dist_info, device, cfg.dist_timeout, governor,
                lambda epoch: _train_epoch(model, student, train_ds, cfg, dist_info, device, epoch, optimizer,
                                           scheduler, scaler, steps_per_epoch, progress, governor, loss_fn,
                                           frozen_bn=True, guard=guard),
                finish_epoch)
    if guard.suspect():  # the same on every process
        raise guard.failure(cfg.epochs - 1, 0, f"the run ended inside {guard.run} consecutive steps with a non-finite "
                                               f"loss or gradient, so {final_path.name} was not written")
    report: dict[str, Any] = {}
    if dist_info.main:
        save_checkpoint(final_path, student, **meta_base, epoch=cfg.epochs, history=history)
        report = conversion_report(checkpoint, teacher, tmeta, student, final_path, cfg, progress=progress)
        atomic_write_json(out_dir / REPORT_NAME, report, indent=1)
    return FinetuneResult(out_dir, final_path, report, history)


# ------------------------------------------------------------------------------------------------ report


@torch.no_grad()
def energy_per_video(model: nn.Module, views: list[Tensor], profile: str, batch_views: int = 64) -> dict[str, float]:
    """Synaptic operations (``mac + ac + spike_product``) and compute energy of ``model`` on ``views`` (one
    (V, C, T, H, W) tensor per video), counted by the energy counter (:func:`svformer_deploy.energy.count_ops`,
    time-invariant BN booked as folded) and priced with ``profile``, summed over every view and divided by the
    number of videos."""
    from svformer_deploy.energy import count_ops, energy_of

    synaptic, pj = 0, 0.0
    flat = torch.cat(views) if views else torch.empty(0)
    for i in range(0, len(flat), batch_views):
        counts = count_ops(model, flat[i:i + batch_views], fold_bn=True)
        totals = counts.totals()
        synaptic += totals["mac"] + totals["ac"] + totals["spike_product"]
        pj += energy_of(counts, profile).compute_pj
    n = max(1, len(views))
    return {"synaptic_ops_per_video": synaptic / n, "energy_uj_per_video": pj / n * 1e-6}


@torch.no_grad()
def assess(model: nn.Module, spec: str, *, num_videos: int | None, clips: int, crops: int,
           class_names: list[str] | None, energy: bool, profile: str, progress: bool = False) -> dict[str, Any]:
    """Top-1/top-5 (softmax summed over each video's views), the network firing rate on those views, and
    with ``energy`` the per-video synaptic ops and energy: one protocol for every model compared."""
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.training.evaluate import evaluate_model

    model.eval()
    res = evaluate_model(model, spec, clips=clips, crops=crops, num_videos=num_videos, class_names=class_names,
                         progress=progress)
    spikes, steps = 0.0, 0
    views = []
    for sample in iter_eval_videos(spec, model.config, split="val", num_videos=num_videos, clips=clips, crops=crops):
        with spike_rates(model) as r:
            model(sample.views)
        spikes += float(r.spikes)
        steps += r.neuron_steps
        if energy:
            views.append(sample.views)
    out = {"top1": res.top1, "top5": res.top5, "num_videos": res.num_videos, "firing_rate": spikes / max(1, steps)}
    if energy:
        out.update(energy_per_video(model, views, profile))
    return out


def conversion_report(checkpoint: str | os.PathLike, teacher: nn.Module, teacher_meta: dict[str, Any],
                      student: nn.Module, final: Path, cfg: FinetuneConfig, progress: bool = False) -> dict[str, Any]:
    """Original vs naive fold (when BN is converted) vs fine-tuned, each assessed by :func:`assess`."""
    kw = dict(num_videos=cfg.eval_videos, clips=cfg.eval_clips, crops=cfg.eval_crops,
              class_names=teacher_meta.get("class_names"),
              energy=cfg.energy, profile=cfg.energy_profile, progress=progress)
    models = {"original": teacher}
    if cfg.bn == "shared" and teacher.config.bn == "per_timestep":
        models["naive_fold"] = time_averaged_bn(teacher)
    models["finetuned"] = student
    rows = {k: assess(m, cfg.data, **kw) for k, m in models.items()}
    return {"teacher": str(checkpoint), "finetuned": str(final), "bn": {"original": teacher.config.bn,
                                                                        "finetuned": student.config.bn},
            "protocol": {"data": cfg.data, "split": "val", "num_videos": rows["original"]["num_videos"],
                         "clips": cfg.eval_clips, "crops": cfg.eval_crops,
                         "score_fusion": "softmax summed over the views of each video",
                         "energy_profile": cfg.energy_profile if cfg.energy else None,
                         "energy_bn": ENERGY_BN if cfg.energy else None},
            "spike_budget": cfg.spike_budget, "models": rows,
            "top1_change_vs_original": {k: v["top1"] - rows["original"]["top1"] for k, v in rows.items()}}


ENERGY_BN = "time-invariant BN folded into its layer (free, as deployed), per-timestep BN counted"
"""The BatchNorm convention of the fine-tuning report's energy (``count_ops(..., fold_bn=True)``); ``energy
report`` counts every BN unless given ``--fold-bn``, so its figures of the same model differ by the BN's ops."""


def format_report(report: dict[str, Any]) -> str:
    """The comparison as a plain-text table."""
    rows = report["models"]
    has_energy = "energy_uj_per_video" in rows["original"]
    p = report["protocol"]
    lines = [f"{p['data']} {p['split']}, {p['num_videos']} videos x {p['clips']} clip(s) x {p['crops']} crop(s), "
             "softmax summed over views"
             + (f"; energy profile {p['energy_profile']}, {ENERGY_BN}" if has_energy else ""),
             f"{'model':12s} {'BN':>13s} {'top-1':>8s} {'vs orig':>8s} {'top-5':>8s} {'fire rate':>10s}"
             + (f" {'syn ops/video':>14s} {'uJ/video':>9s}" if has_energy else "")]
    bn = {"original": report["bn"]["original"], "naive_fold": "shared", "finetuned": report["bn"]["finetuned"]}
    for name, r in rows.items():
        line = (f"{name:12s} {bn[name]:>13s} {100 * r['top1']:7.2f}% {100 * report['top1_change_vs_original'][name]:+7.2f}"
                f" {100 * r['top5']:7.2f}% {r['firing_rate']:10.4f}")
        if has_energy:
            line += f" {r['synaptic_ops_per_video']:14.4g} {r['energy_uj_per_video']:9.3f}"
        lines.append(line)
    if report.get("spike_budget") is not None:
        lines.append(f"spike budget: {report['spike_budget']:g} of neuron-steps")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ budget curve


def finetune_budgets(checkpoint: str | os.PathLike, cfg: FinetuneConfig, budgets: list[float], *,
                     resume: bool = False, force: bool = False, command: str | None = None, progress: bool = True,
                     on_epoch: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[FinetuneResult], Path]:
    """One fine-tuning run per spike budget (in ``out_dir/budget-R``), then the accuracy-vs-energy curve
    (``budget_curve.csv`` and ``.png`` in ``out_dir``): one row for the original and one per budget, each with
    top-1, firing rate and energy per video measured on the same clips and views. With ``resume``, finished
    budget runs are reused and an interrupted one continues from its ``last.pt``."""
    if not budgets:
        raise ConfigError("give at least one --spike-budget")
    out = Path(cfg.out_dir)
    refuse_file_in_the_way(out)
    subs = [dataclasses.replace(cfg, out_dir=str(out / f"budget-{r:g}"), spike_budget=r, energy=True)
            for r in sorted(set(budgets), reverse=True)]
    if resume and not any((Path(sub.out_dir) / name).is_file() for sub in subs for name in (LAST, REPORT_NAME)):
        raise _nothing_to_resume(out, "last.pt in " + " or ".join(Path(sub.out_dir).name for sub in subs))
    refuse_whole_output(out, FINETUNE_RUN)  # an earlier curve here is a fine-tuning run's: --force replaces it
    results = []
    for sub in subs:
        done = Path(sub.out_dir) / REPORT_NAME
        if resume and done.exists():
            results.append(FinetuneResult(Path(sub.out_dir), Path(sub.out_dir) / FINETUNED,
                                          json.loads(done.read_text())))
            continue
        results.append(finetune(checkpoint, sub, resume=resume and (Path(sub.out_dir) / LAST).exists(),
                                force=force, command=command, progress=progress, on_epoch=on_epoch))
    rows = [{"model": "original", "spike_budget": "", **_curve_fields(results[0].report["models"]["original"])}]
    rows += [{"model": f"budget {res.report['spike_budget']:g}", "spike_budget": res.report["spike_budget"],
              **_curve_fields(res.report["models"]["finetuned"])} for res in results]

    def write_csv(tmp: str) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        Path(tmp).write_text(buf.getvalue())

    mark_output(out, FINETUNE_RUN)
    atomic_write(out / CURVE_CSV, write_csv)
    plot_budget_curve(rows, out / CURVE_PNG, results[0].report["protocol"])
    return results, out / CURVE_CSV


def _curve_fields(r: dict[str, Any]) -> dict[str, Any]:
    return {"top1": r["top1"], "firing_rate": r["firing_rate"], "synaptic_ops_per_video": r["synaptic_ops_per_video"],
            "energy_uj_per_video": r["energy_uj_per_video"]}


def plot_budget_curve(rows: list[dict[str, Any]], path: Path, protocol: dict[str, Any]) -> Path:
    """Top-1 against energy per video, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    xs = [r["energy_uj_per_video"] for r in rows]
    ys = [100 * r["top1"] for r in rows]
    ax.plot(xs[1:], ys[1:], "o-", color="tab:blue", label="fine-tuned under a spike budget")
    ax.plot(xs[:1], ys[:1], "s", color="tab:red", label="original")
    for r, x, y in zip(rows, xs, ys):
        ax.annotate(f"{r['model']}\nrate {r['firing_rate']:.3f}", (x, y), textcoords="offset points", xytext=(5, -14),
                    fontsize=7)
    ax.set_xlabel(f"compute energy per video (uJ, {protocol.get('energy_profile')})")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"accuracy vs energy, {protocol['data']} val, {protocol['num_videos']} videos", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
