"""Round-to-nearest: the grid alone (method §5), no calibration data.

Layers still move to the device one at a time, and all experts of a projection are
fitted in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from moequant.models import adapt
from moequant.quant.config import QuantConfig
from moequant.quant.driver import check_groupsize, layer_progress
from moequant.quant.layer_store import LayerStore
from moequant.quant.gptq import rtn_codes
from moequant.quant.grid import GridSpec, QuantizedWeight
from moequant.quant.algorithm import Algorithm
from moequant.quant.report import QuantResult, ReportRow
from moequant.quant.targets import LayerTargets
from moequant.runtime import resolve_device


@dataclass(frozen=True)
class RTNConfig:
    """RTN has no options of its own: the grid is all it rounds to."""


def rtn_quantize(w: torch.Tensor, spec: GridSpec) -> QuantizedWeight:
    """Codes of `w` [..., out, in] on its own fitted grid."""
    codes, scale, zero = rtn_codes(w, spec)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, spec.wbits, spec.sym)


@torch.no_grad()
def quantize_rtn(
    model: nn.Module, calib: torch.Tensor | None, config: QuantConfig[RTNConfig], store: LayerStore | None = None
) -> QuantResult:
    adapter = adapt(model)
    check_groupsize(adapter, config)
    device = resolve_device(config.run.device)
    spec = config.grid
    result = QuantResult()
    for layer in layer_progress(adapter.layers, f"quantize rtn w{spec.wbits}", result):
        if store is not None:
            store.load(layer)
        for target in LayerTargets.of(layer, config.run.quantize_router).all():
            q = rtn_quantize(target.read().to(device), spec)
            target.write(q.dequantize().cpu())
            rows = [
                ReportRow(layer.index, target.module, e if target.is_experts else None, 0, 0.0, math.nan, math.nan, "")
                for e in range(q.codes.shape[0])
            ]
            result.add(target.address, q, rows)
        if store is not None:
            store.store(layer, result)
    return result


ALGORITHMS = (
    Algorithm("rtn", RTNConfig, quantize_rtn, needs_calibration=False, description="round-to-nearest on the weight grid"),
)
