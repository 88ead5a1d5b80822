"""Writing a model directory one shard at a time, under the names its Hub checkpoint uses.

A stage that streams decoder layers (quantize, rotate) writes layer k to shard k+2 as soon
as it is done and what lies outside the layers to shard 1 at the end, so no stage ever
needs the whole state dict in memory. Names are reverted through transformers' own weight
conversion, so the directory loads with a stock `from_pretrained` whatever the family.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moequant.artifacts import write_json
from moequant.models.files import INDEX_FILE


def shard_name(index: int, count: int) -> str:
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def revert_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under the model's original Hub names, as `save_pretrained` would write it."""
    from transformers.core_model_loading import revert_weight_conversion

    return revert_weight_conversion(model, state) if state else {}


@dataclass(frozen=True)
class ExpertSplit:
    """A fused experts bank whose Hub format keeps the experts fused, written as one linear per expert.

    compressed-tensors packs 2-D [out, in] weights, so such a bank (gpt-oss stores
    `gate_up_proj` [E, H, 2I] with gate and up interleaved) goes out as
    `<experts>.<e>.{gate,up,down}_proj.{weight,bias}`: the per-expert names of vLLM's MoE
    loaders and the layout llm-compressor writes for gpt-oss. `conversions` tells
    transformers how to fuse them back into the bank on load.
    """

    experts: str
    """The bank's module path inside a decoder layer, e.g. "mlp.experts"."""
    transposed: bool
    interleaved: bool
    bias: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def conversions(self) -> list[Any]:
        from transformers.core_model_loading import Concatenate, Interleave, MergeModulelist, Transpose, WeightConverter

        stem = f".{self.experts}"
        gate_up = [MergeModulelist(dim=0), Concatenate(dim=1)]  # [E, 2I, H], gate rows first
        if self.interleaved:
            gate_up.append(Interleave(dim=1, inverse=True))
        down: list[Any] = [MergeModulelist(dim=0)]  # [E, H, I]
        if self.transposed:
            gate_up.append(Transpose(1, 2))
            down.append(Transpose(1, 2))
        found = [
            WeightConverter([f"{stem}.*.gate_proj.weight", f"{stem}.*.up_proj.weight"], f"{stem}.gate_up_proj", gate_up),
            WeightConverter([f"{stem}.*.down_proj.weight"], f"{stem}.down_proj", down),
        ]
        if self.bias:
            bias = [MergeModulelist(dim=0), Concatenate(dim=1)] + ([Interleave(dim=1, inverse=True)] if self.interleaved else [])
            found.append(WeightConverter([f"{stem}.*.gate_proj.bias", f"{stem}.*.up_proj.bias"], f"{stem}.gate_up_proj_bias", bias))
            found.append(WeightConverter([f"{stem}.*.down_proj.bias"], f"{stem}.down_proj_bias", [MergeModulelist(dim=0)]))
        return found


@contextmanager
def split_experts_conversions(model_type: str, splits: list[ExpertSplit]) -> Iterator[None]:
    """transformers' conversions of `model_type` with the splits' fusing ones added, for one load.

    The family's own conversions stay first; the registration is undone afterwards, so a
    checkpoint in the family's Hub format loads as before.
    """
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

    if not splits:
        yield
        return
    own = get_checkpoint_conversion_mapping(model_type)
    added = [c for split in splits for c in split.conversions()]
    register_checkpoint_conversion_mapping(model_type, [*(own or []), *added], overwrite=True)
    try:
        yield
    finally:
        register_checkpoint_conversion_mapping(model_type, own, overwrite=True)  # type: ignore[arg-type]


def outside_layers(model: nn.Module, prefixes: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Hub-named tensors outside the decoder layers, tied duplicates left out (name → kept name)."""
    kept, tied, seen = {}, {}, {}
    for name, tensor in model.state_dict().items():
        if any(name.startswith(f"{p}.") for p in prefixes):
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = tensor.detach().cpu().contiguous()
    return revert_names(model, kept), tied


def layer_state(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """A decoder layer's tensors under their full model names."""
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


class ShardWriter:
    """Shards of one directory, written in any order, and the index that maps every tensor to its shard."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory, self.count = directory, count
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def write(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        name = shard_name(index, self.count)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(self.directory / name), metadata={"format": "pt"})
        self.weight_map.update({key: name for key in tensors})
        self.total += sum(t.numel() * t.element_size() for t in tensors.values())

    def write_index(self) -> None:
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
        write_json(self.directory / INDEX_FILE, index)


def save_config(model: nn.Module, directory: Path, tokenizer: Any | None = None) -> None:
    """config.json (with the model's own code when it has any) and the tokenizer, beside the shards."""
    model.config.save_pretrained(directory)
    if getattr(model.config, "auto_map", None):
        from transformers.dynamic_module_utils import custom_object_save

        custom_object_save(model, directory, config=model.config)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
