"""What train, finetune and evaluate write into their ``--out`` folders, declared together because they share
folders (an evaluation beside either run) and name each other's runs (``--resume`` of the wrong kind): the rule
that applies these declarations is :mod:`svformer_deploy._outputs`."""

from __future__ import annotations

from svformer_deploy._outputs import Output

__all__ = ["LAST", "BEST", "FINETUNED", "METRICS_CSV", "METRICS_JSON", "FINETUNE_REPORT", "CURVE_CSV", "CURVE_PNG",
           "EVAL_JSON", "CONFUSION_PNG", "PREDICTIONS_CSV", "TRAIN_RUN", "FINETUNE_RUN", "EVALUATION", "RUNS"]

LAST, BEST, FINETUNED = "last.pt", "best.pt", "finetuned.pt"
METRICS_CSV, METRICS_JSON = "metrics.csv", "metrics.json"
FINETUNE_REPORT, CURVE_CSV, CURVE_PNG = "finetune.json", "budget_curve.csv", "budget_curve.png"
EVAL_JSON, CONFUSION_PNG, PREDICTIONS_CSV = "eval.json", "confusion.png", "predictions.csv"

TRAIN_RUN = Output("train", "a training run (svformer-deploy train)", "train", whole=False,
                   files=(LAST, BEST, METRICS_CSV, METRICS_JSON), shares={"train": "train", "evaluation": "evaluate"})
FINETUNE_RUN = Output("finetune", "a fine-tuning run (svformer-deploy finetune)", "finetune", whole=False,
                      files=(LAST, FINETUNED, METRICS_CSV, METRICS_JSON, FINETUNE_REPORT, CURVE_CSV, CURVE_PNG),
                      shares={"finetune": "finetune", "evaluation": "evaluate"})
"""A fine-tuning run, or the folder of a budget curve (its ``budget-R`` runs are folders of their own)."""
EVALUATION = Output("evaluation", "evaluation results (svformer-deploy evaluate)", "evaluate", whole=False,
                    files=(EVAL_JSON, CONFUSION_PNG, PREDICTIONS_CSV),
                    shares={"train": "train", "finetune": "finetune", "evaluation": "evaluate"})
"""train and finetune both write last.pt and metrics, so neither shares the other's folder; evaluate's files
collide with neither."""

RUNS = {o.kind: o for o in (TRAIN_RUN, FINETUNE_RUN)}
"""The runs ``--resume`` continues, by kind."""
