"""One exception hierarchy for everything a user can get wrong.

Every message names the problem *and* the fix. The CLI prints ``str(error)`` as one line on stderr and
exits with :attr:`SVFormerDeployError.exit_code`; ``--debug`` shows the traceback.
"""

from __future__ import annotations

__all__ = [
    "SVFormerDeployError",
    "ConfigError",
    "UnknownModelError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "ShapeMismatchError",
    "NonFiniteWeightsError",
    "InputShapeError",
    "DataError",
    "ExportError",
    "UnsupportedLayerError",
    "LavaEnvironmentError",
    "OutputExistsError",
    "DistributedError",
    "TrainingDivergedError",
    "BundleFormatError",
    "VerificationError",
    "EnergyError",
    "ProfileError",
]


class SVFormerDeployError(Exception):
    """Base class: a problem with the user's input, stated with its fix."""

    exit_code: int = 2


class ConfigError(SVFormerDeployError, ValueError):
    """A model config or an override is invalid (unknown key, wrong type, inconsistent sizes)."""


class UnknownModelError(ConfigError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SVFormerDeployError):
    """A checkpoint file cannot be used."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


class CheckpointFormatError(CheckpointError):
    """The file is not a checkpoint of this project (truncated, foreign, or wrong version)."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects that safe loading refuses to execute."""


class ShapeMismatchError(CheckpointError):
    """Weights in a file do not fit the model their config describes."""


class NonFiniteWeightsError(CheckpointError):
    """Weights contain NaN or Inf."""


class InputShapeError(SVFormerDeployError, ValueError):
    """An input tensor does not have the shape the model was built for."""


class DataError(SVFormerDeployError):
    """A dataset, split file or video cannot be read."""


class ExportError(SVFormerDeployError):
    """An export cannot be produced or verified."""


class UnsupportedLayerError(ExportError):
    """A module that an exporter or counter has no rule for; the message names its dotted path and type."""


class BundleFormatError(ExportError):
    """An export bundle is missing, damaged, modified after export, or of another format version."""


class VerificationError(ExportError):
    """An export could not be checked (a file nir.read refuses, a runtime that cannot load a partition)."""


class LavaEnvironmentError(VerificationError):
    """The Lava side environment (Python 3.10 + lava-dl) is missing and could not be built; the message says why."""


class OutputExistsError(SVFormerDeployError, FileExistsError):
    """An output path exists and ``--force`` was not given."""


class DistributedError(SVFormerDeployError):
    """Processes of a distributed (torchrun) run lost step: a collective failed, timed out, or a peer stopped."""


class TrainingDivergedError(SVFormerDeployError):
    """Training produced non-finite losses or gradients for too many consecutive steps (a learning rate too high,
    an unstable recipe); the message names the epoch, what was kept on disk and what to change."""


class EnergyError(SVFormerDeployError):
    """An energy count or report cannot be produced."""


class ProfileError(EnergyError):
    """A hardware energy profile is unknown or invalid."""
