"""svformer-deploy: SVFormer from a PyTorch checkpoint to neuromorphic formats, with energy accounting.

Public entry points live in the subpackages:

- :mod:`svformer_deploy.models` -- the model registry (``create_model``), checkpoints, spike recording;
- :mod:`svformer_deploy.data` -- the built-in moving-digits task and UCF101/HMDB51 folder datasets;
- :mod:`svformer_deploy.energy` -- synaptic-operation counting and energy reports;
- :mod:`svformer_deploy.exporters` -- NIR, Lava-DL netx and ONNX export with verification.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
