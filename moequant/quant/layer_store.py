"""The contract between the layer-streaming loop and a model whose layers are not all in memory."""

from __future__ import annotations

from typing import Protocol

from moequant.models import DecoderLayer
from moequant.quant.report import QuantResult


class LayerStore(Protocol):
    """Where decoder layers come from and go to when the model does not stay in host memory.

    `load` puts a layer's weights in place before it is quantized; `store` writes what the
    layer became (its checkpoint shard) and frees it. Without a store, every layer stays
    resident and the checkpoint is written at the end.
    """

    def load(self, layer: DecoderLayer) -> None: ...

    def store(self, layer: DecoderLayer, result: QuantResult) -> None: ...
