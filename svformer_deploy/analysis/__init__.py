"""Analyses of trained models on real videos: spike sparsity tables, energy shares and their plots.

- :mod:`svformer_deploy.analysis.sparsity`: :func:`analyse` / :func:`analyse_checkpoint` -> :class:`SparsityAnalysis`
  (tidy firing rates per layer x timestep x video) and its summaries;
- :mod:`svformer_deploy.analysis.energy`: op counts and energy of the same videos from :mod:`svformer_deploy.energy`,
  grouped by module and compared with the ANN twin;
- :mod:`svformer_deploy.analysis.plots`: one function per figure, each returning a matplotlib ``Figure``;
- :mod:`svformer_deploy.analysis.report`: figures and CSV tables written atomically to a folder.
"""

from svformer_deploy.analysis import plots
from svformer_deploy.analysis.energy import (
    EnergyBreakdown,
    attention_products,
    energy_breakdown,
    energy_per_video,
    module_group,
    rate_vs_share,
)
from svformer_deploy.analysis.report import write_sparsity_report
from svformer_deploy.analysis.sparsity import (
    RATE_COLUMNS,
    SparsityAnalysis,
    analyse,
    analyse_checkpoint,
    attention_qkv_rates,
    mean_rate_by_layer,
    rate_by_class,
    rate_by_correctness,
    rate_spread_by_video,
)

__all__ = [
    "RATE_COLUMNS", "SparsityAnalysis", "analyse", "analyse_checkpoint", "attention_qkv_rates", "mean_rate_by_layer", "rate_by_class", "rate_by_correctness", "rate_spread_by_video",
    "EnergyBreakdown", "energy_breakdown", "module_group", "rate_vs_share", "attention_products", "energy_per_video",
    "write_sparsity_report", "plots",
]
