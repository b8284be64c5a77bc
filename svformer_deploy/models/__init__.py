"""SVFormer models: the registry and factory, the model, its neurons, spike recording and checkpoints."""

from svformer_deploy.models._registry import create_model, get_config, list_models, register_model
from svformer_deploy.models.checkpoint import file_sha256, load_checkpoint, read_checkpoint, save_checkpoint
from svformer_deploy.models.config import SVFormerConfig
from svformer_deploy.models.neurons import (PLIF, PLIFParameters, PLIFState, ReLUNeuron, SpikingNeuron, plif_multistep,
                                            plif_step)
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.models.recording import SpikeRecording, forward_hooks, iter_neurons, record_spikes
from svformer_deploy.models.svformer import SVFormer

__all__ = [
    "create_model", "get_config", "list_models", "register_model", "SVFormerConfig", "SVFormer",
    "PLIF", "PLIFParameters", "PLIFState", "ReLUNeuron", "SpikingNeuron", "plif_step", "plif_multistep",
    "TemporalBatchNorm",
    "save_checkpoint", "load_checkpoint", "read_checkpoint", "file_sha256",
    "record_spikes", "forward_hooks", "iter_neurons", "SpikeRecording",
]
