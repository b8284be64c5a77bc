"""The model config: a frozen, typed dataclass that travels inside every checkpoint and export."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from svformer_deploy.errors import ConfigError

__all__ = ["SVFormerConfig", "BNMode", "NeuronKind"]

BNMode = Literal["per_timestep", "shared"]
NeuronKind = Literal["plif", "relu"]


@dataclass(frozen=True)
class SVFormerConfig:
    """Everything needed to rebuild an SVFormer, and the input it expects.

    Attributes:
        name: registry name the config came from.
        num_classes: size of the classifier output.
        img_size: side of the square input frames (pixels); must be divisible by 32.
        in_chans: input channels (3 for RGB).
        num_frames: T, the number of frames of a clip = the number of SNN timesteps (one frame per step).
        embed_dims: channel widths of the four stages.
        depths: number of blocks per stage (stages 1-2 local ``CBlock``, stages 3-4 attention ``SABlock``).
        head_dim: channels per attention head (heads per stage = width / head_dim).
        mlp_ratio: hidden width of every MLP as a multiple of the stage width.
        bn: ``"per_timestep"`` = the reference's BatchNorm over T x C features (own statistics and affine per
            timestep); ``"shared"`` = one BatchNorm for all timesteps (folds into time-invariant weights).
        neuron: ``"plif"`` (the SNN) or ``"relu"`` (the ANN twin used as an energy baseline).
        tau_init: initial PLIF time constant (1/tau = sigmoid(w)).
        v_threshold: PLIF firing threshold (spike when H >= v_threshold).
        surrogate_alpha: ATan surrogate-gradient sharpness.
        drop_path_rate: stochastic-depth rate, linearly increasing over all blocks (0.2 in the reference).
        mean, std: per-channel input normalisation of the frames.
    """

    name: str
    num_classes: int
    img_size: int
    num_frames: int
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    head_dim: int = 64
    mlp_ratio: float = 2.0
    in_chans: int = 3
    bn: BNMode = "per_timestep"
    neuron: NeuronKind = "plif"
    tau_init: float = 2.0
    v_threshold: float = 1.0
    surrogate_alpha: float = 2.0
    drop_path_rate: float = 0.0
    mean: tuple[float, ...] = field(default=(0.45, 0.45, 0.45))
    std: tuple[float, ...] = field(default=(0.225, 0.225, 0.225))

    def __post_init__(self) -> None:
        # Normalise sequences (JSON gives lists) to tuples so configs compare and hash.
        for f in ("embed_dims", "depths", "mean", "std"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if len(self.embed_dims) != 4 or len(self.depths) != 4:
            raise ConfigError(f"embed_dims and depths need 4 entries (one per stage); got {self.embed_dims}, {self.depths}")
        if self.img_size % 32 != 0 or self.img_size < 32:
            raise ConfigError(f"img_size={self.img_size} must be a positive multiple of 32 (total stride of the model)")
        for d in self.embed_dims[2:]:
            if d % self.head_dim != 0:
                raise ConfigError(f"attention width {d} is not divisible by head_dim={self.head_dim}; choose widths that are")
        if self.bn not in ("per_timestep", "shared"):
            raise ConfigError(f"bn={self.bn!r}: use 'per_timestep' (the reference) or 'shared' (exportable)")
        if self.neuron not in ("plif", "relu"):
            raise ConfigError(f"neuron={self.neuron!r}: use 'plif' (SNN) or 'relu' (ANN twin)")
        if self.num_frames < 1 or self.num_classes < 1:
            raise ConfigError("num_frames and num_classes must be positive")
        if self.tau_init <= 1.0:
            raise ConfigError(f"tau_init={self.tau_init} must be > 1 (1/tau = sigmoid(w) < 1)")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(f"mean/std need {self.in_chans} entries, one per input channel")

    @property
    def num_heads(self) -> tuple[int, int, int, int]:
        return tuple(d // self.head_dim for d in self.embed_dims)  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip, (C, T, H, W); a batch is (B, C, T, H, W)."""
        return (self.in_chans, self.num_frames, self.img_size, self.img_size)

    def replace(self, **overrides: Any) -> "SVFormerConfig":
        """A copy with some fields changed; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SVFormerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config has unknown key(s) {unknown}; was it written by a newer svformer-deploy?")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"incomplete model config: {err}") from err
