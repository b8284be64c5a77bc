"""Files shipped inside the package: the default trained checkpoint.

``svformer_tiny_moving_digits.pt``: an ``svformer_tiny`` (bn="shared") trained on moving digits by this project's
own ``svformer-deploy train`` command; its meta stores the exact command, the seed and the validation metrics
(``svformer-deploy info`` on the path prints them).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from svformer_deploy.errors import CheckpointNotFoundError

__all__ = ["DEFAULT_CHECKPOINT", "default_checkpoint"]

DEFAULT_CHECKPOINT = "svformer_tiny_moving_digits.pt"


def default_checkpoint() -> Path:
    """Path of the shipped ``svformer_tiny`` moving-digits checkpoint."""
    path = Path(str(importlib.resources.files(__name__) / DEFAULT_CHECKPOINT))
    if not path.is_file():
        raise CheckpointNotFoundError(f"the shipped checkpoint {path} is missing from this installation; reinstall "
                                      "svformer-deploy or train one with `svformer-deploy train`")
    return path
