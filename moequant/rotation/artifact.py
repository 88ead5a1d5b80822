"""The rotated model on disk: an ordinary transformers directory plus rotation.json.

The directory loads with the usual `from_pretrained`; rotation.json says how it was made
(seed, Hadamard construction, transform, source and its file hashes) and whether the
runtime half of an online Hadamard must be re-installed after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from moequant.artifacts import atomic_dir, file_sha256, write_json
from moequant.models import DecoderLayer, adapt
from moequant.models.shards import ShardWriter, layer_state, outside_layers, revert_names, save_config
from moequant.models.streaming import OffloadedLayers
from moequant.rotation.online import OnlineHadamard, install_online_hadamard

METADATA_FILE = "rotation.json"
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")


def source_hashes(spec: str) -> dict[str, str]:
    """sha256 of the source directory's config, tokenizer and weight files (empty for hub ids)."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        return {}
    files = [path for path in sorted(root.iterdir()) if path.is_file() and path.suffix in _HASHED_SUFFIXES]
    return {path.name: file_sha256(path) for path in files}


def save_rotated(
    model: nn.Module, out_dir: str | Path, metadata: dict[str, object], tokenizer: object | None = None
) -> Path:
    """Write model, tokenizer and rotation.json atomically; returns the final directory."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json(tmp / METADATA_FILE, metadata)
    return Path(out_dir)


class StreamedRotation:
    """The layer stream of `rotate --stream`: each layer read from the shards, rotated, written to its shard, freed.

    The directory it writes has one shard per decoder layer plus one for the rest, under
    the Hub names, and loads with a stock `from_pretrained` like `save_pretrained`'s output.
    """

    def __init__(self, model: nn.Module, offloaded: OffloadedLayers, directory: Path, device: torch.device) -> None:
        self.model, self.offloaded, self.directory, self.device = model, offloaded, directory, device
        self.prefixes = adapt(model).layer_prefixes()
        self.shards = ShardWriter(directory, len(self.prefixes) + 1)

    def load(self, layer: DecoderLayer) -> None:
        self.offloaded.load(layer.index, layer.module, self.device)

    def store(self, layer: DecoderLayer) -> None:
        self.shards.write(layer.index + 2, revert_names(self.model, layer_state(layer.module, self.prefixes[layer.index])))
        self.offloaded.release(layer.index, layer.module)

    def finish(self, metadata: dict[str, object], tokenizer: object | None) -> None:
        outside, _ = outside_layers(self.model, list(self.prefixes.values()))
        self.shards.write(1, outside)
        self.shards.write_index()
        save_config(self.model, self.directory, tokenizer)
        if getattr(self.model, "generation_config", None) is not None:
            self.model.generation_config.save_pretrained(self.directory)
        write_json(self.directory / METADATA_FILE, metadata)


def read_metadata(model_dir: str | Path) -> dict[str, object] | None:
    path = Path(model_dir).expanduser() / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def restore_online_hadamard(model: nn.Module, model_dir: str | Path, backend: str = "auto") -> OnlineHadamard | None:
    """Re-install the runtime Hadamard a rotated directory needs; None when it needs none."""
    metadata = read_metadata(model_dir)
    if not metadata or not metadata.get("online_hadamard"):
        return None
    return install_online_hadamard(adapt(model), backend)
