"""Analyses of trained models on real videos: spike sparsity tables and their plots."""

from svformer_deploy.analysis.sparsity import (
    RATE_COLUMNS,
    SparsityAnalysis,
    analyse,
    analyse_checkpoint,
    attention_qkv_rates,
    layer_group,
    mean_rate_by_layer,
    rate_by_class,
    rate_by_correctness,
    rate_spread_by_video,
)

__all__ = [
    "RATE_COLUMNS", "SparsityAnalysis", "analyse", "analyse_checkpoint", "attention_qkv_rates", "layer_group", "mean_rate_by_layer",
    "rate_by_class", "rate_by_correctness", "rate_spread_by_video",
]
