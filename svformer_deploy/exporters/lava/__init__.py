"""Lava-DL netx export: Loihi fixed-point quantisation, a bit-exact emulation, netx files and a Lava runner."""

from svformer_deploy.exporters.lava.emulate import emulate_layer, emulate_partition
from svformer_deploy.exporters.lava.netx import read_netx, write_netx
from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiLayer, LoihiOverflowWarning, quantize_layer

__all__ = ["FloatLayer", "LoihiLayer", "LoihiOverflowWarning", "quantize_layer", "emulate_layer",
           "emulate_partition", "write_netx", "read_netx"]
