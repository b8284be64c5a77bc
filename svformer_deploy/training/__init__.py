"""Training and evaluation of SVFormer models on moving digits or UCF101 / HMDB51 folders."""

from svformer_deploy.training.engine import (
    TrainConfig, TrainResult, collate_skip_bad, param_groups, precise_bn, soft_cross_entropy, topk_correct, train,
    warmup_cosine,
)

__all__ = ["TrainConfig", "TrainResult", "train", "param_groups", "warmup_cosine", "collate_skip_bad",
           "soft_cross_entropy", "topk_correct", "precise_bn"]
