"""Exact shapes, parameters, costs and receptive fields of conv stacks (see ``core``)."""

from convjax.analysis.core import (NUMERIC_KEYS, Analysis, LayerRow, analyze, forward,
                                   layer_forward, param_structs)
from convjax.analysis.specs import (ACTIVATIONS, Activation, BatchNorm, Conv, ConvTranspose,
                                    Dense, DepthwiseConv, Dropout, Flatten, GlobalPool,
                                    LayerSpec, Pool, SeparableConv, SpecError, parse_layers,
                                    spec_names)
from convjax.analysis.sizes import SizeReport, fully_convolutional, input_size_report
from convjax.analysis.xla import XlaFlops, compiled_flops, xla_flops
from convjax.analysis.model import analyze_model, trace_layers
from convjax.analysis import render

__all__ = ["NUMERIC_KEYS", "Analysis", "LayerRow", "analyze", "forward", "layer_forward",
           "param_structs", "ACTIVATIONS", "Activation", "BatchNorm", "Conv", "ConvTranspose",
           "Dense", "DepthwiseConv", "Dropout", "Flatten", "GlobalPool", "LayerSpec", "Pool",
           "SeparableConv", "SpecError", "parse_layers", "spec_names", "SizeReport",
           "fully_convolutional", "input_size_report", "XlaFlops", "compiled_flops",
           "xla_flops", "analyze_model", "trace_layers", "render"]
